/* The context model's frequency rows, one position at a time (raqcodec.context; optional, see setup.py).
 *
 * From the distance products x (n positions x M components x K codewords, float64, computed exactly by
 * the caller's matrix product) this computes exactly what ContextModel.scaled_weights followed by
 * _normalise compute with a dozen torch passes, in one pass per position that stays in L1:
 *
 *   s          = min over m of (floor(min_k x[m,k]) + offset[m])
 *   t[m,k]     = trunc(min(x[m,k] + (offset[m] - s), cut))     (the same IEEE operations as the torch path)
 *   w[k]       = sum_m lut[t[m,k]]                              (integers)
 *   share[k]   = floor(w[k] * spare / sum(w))                   (exact, see share_of)
 *   frequency  = 1 + share[k], plus spare - sum(share) for the first largest w[k]
 *
 * Only exact operations follow x, so the rows are the same bits on every machine and compiler (FMA
 * contraction cannot change an exact result). The torch path stays as the reference, which the tests
 * compare this with, and as the fallback where the extension was not built. Buffers arrive through the
 * buffer protocol with every length checked here. The GIL is released while computing: raqcodec's worker
 * threads run this in parallel.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_COMPONENTS 16
#define MAX_CUT 255
#define MAX_SIZE (1 << 16)

typedef struct {
    Py_ssize_t m, k;
    int cut;
    double spare;
    const int64_t *lut;  /* cut + 1 entries in 0..2^16 */
    int64_t *pair;       /* (cut + 1)^2 entries: lut[i] + lut[j] at i * (cut + 1) + j */
    double *w;           /* k entries: one row's weights (scratch) */
} Tables;

static double min_of(const double *x, Py_ssize_t k) {
    /* four running minima, so the loop is not one long dependency chain */
    double a = x[0], b = x[0], c = x[0], d = x[0];
    Py_ssize_t j = 0;
    for (; j + 4 <= k; j += 4) {
        a = x[j] < a ? x[j] : a;
        b = x[j + 1] < b ? x[j + 1] : b;
        c = x[j + 2] < c ? x[j + 2] : c;
        d = x[j + 3] < d ? x[j + 3] : d;
    }
    for (; j < k; j++) a = x[j] < a ? x[j] : a;
    a = b < a ? b : a;
    c = d < c ? d : c;
    return c < a ? c : a;
}

static inline int32_t table_index(double v, double cut) { return (int32_t)(v < cut ? v : cut); }

/* One position: w[0..k) (as doubles: integers below 2^21) and their sum; returns the first largest. */
static Py_ssize_t row_weights(const Tables *tb, const double *x, const double *offset, double *w, double *total) {
    const Py_ssize_t m = tb->m, k = tb->k, width = tb->cut + 1;
    const double cut = (double)tb->cut;
    double shift[MAX_COMPONENTS];
    double s = INFINITY;
    for (Py_ssize_t c = 0; c < m; c++) {
        double lowest = floor(min_of(x + c * k, k)) + offset[c];
        s = lowest < s ? lowest : s;
    }
    for (Py_ssize_t c = 0; c < m; c++) shift[c] = offset[c] - s;
    Py_ssize_t c = 0;
    if (m >= 2) { /* first pair writes w, later components add to it */
        const double *x0 = x, *x1 = x + k, s0 = shift[0], s1 = shift[1];
        for (Py_ssize_t j = 0; j < k; j++)
            w[j] = (double)tb->pair[table_index(x0[j] + s0, cut) * width + table_index(x1[j] + s1, cut)];
        c = 2;
    } else {
        for (Py_ssize_t j = 0; j < k; j++) w[j] = (double)tb->lut[table_index(x[j] + shift[0], cut)];
        c = 1;
    }
    for (; c + 1 < m; c += 2) {
        const double *x0 = x + c * k, *x1 = x + (c + 1) * k, s0 = shift[c], s1 = shift[c + 1];
        for (Py_ssize_t j = 0; j < k; j++)
            w[j] += (double)tb->pair[table_index(x0[j] + s0, cut) * width + table_index(x1[j] + s1, cut)];
    }
    if (c < m) {
        const double *x0 = x + c * k, s0 = shift[c];
        for (Py_ssize_t j = 0; j < k; j++) w[j] += (double)tb->lut[table_index(x0[j] + s0, cut)];
    }
    Py_ssize_t top = 0;
    double sum = 0;
    for (Py_ssize_t j = 0; j < k; j++) {
        sum += w[j];
        if (w[j] > w[top]) top = j;
    }
    *total = sum;
    return top;
}

/* floor(w * spare / total) for integers w < 2^21, spare < 2^24, 0 < total < 2^37, held in doubles. The
 * quotient is below 2^24 and its product with the rounded reciprocal is within 2^-27 of it, so the
 * truncation is the floor or one off; the remainder decides which, computed exactly: num < 2^45 and
 * q * total <= num + total < 2^53. */
static inline double share_of(double w, double spare, double total, double inverse) {
    double num = w * spare;
    double q = (double)(int32_t)(num * inverse);
    double r = num - q * total;
    return r < 0 ? q - 1 : (r >= total ? q + 1 : q);
}

typedef struct {
    Py_buffer x, offset, lut, chosen, out;
} Buffers;

static void release(Buffers *b) {
    Py_buffer *all[] = {&b->x, &b->offset, &b->lut, &b->chosen, &b->out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->obj) PyBuffer_Release(all[i]);
}

/* Frees what prepare allocated and releases the buffers; returns ``result`` (NULL: an exception is set). */
static PyObject *finish(Tables *tb, Buffers *b, PyObject *result) {
    free(tb->pair);
    free(tb->w);
    release(b);
    return result;
}

/* Checks the shared arguments and builds the tables; 0 with an exception set on failure (call finish). */
static int prepare(Tables *tb, Buffers *b, Py_ssize_t n, Py_ssize_t m, Py_ssize_t k, int cut, long long spare) {
    if (n < 0 || m < 1 || m > MAX_COMPONENTS || k < 1 || k > MAX_SIZE || cut < 0 || cut > MAX_CUT || spare < 1 ||
        spare > (1LL << 24)) {
        PyErr_SetString(PyExc_ValueError, "context kernel: sizes out of range");
        return 0;
    }
    if (b->x.len != n * m * k * (Py_ssize_t)sizeof(double) || b->offset.len != n * m * (Py_ssize_t)sizeof(double) ||
        b->lut.len != (cut + 1) * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "context kernel: buffer lengths do not match the sizes");
        return 0;
    }
    const int64_t *lut = b->lut.buf;
    for (int i = 0; i <= cut; i++) {
        if (lut[i] < 0 || lut[i] > (1 << 16)) {
            PyErr_SetString(PyExc_ValueError, "context kernel: table entries out of range");
            return 0;
        }
    }
    Py_ssize_t width = cut + 1;
    tb->pair = malloc(width * width * sizeof(int64_t));
    tb->w = malloc(k * sizeof(double));
    if (!tb->pair || !tb->w) {
        PyErr_NoMemory();
        return 0;
    }
    for (Py_ssize_t i = 0; i < width; i++)
        for (Py_ssize_t j = 0; j < width; j++) tb->pair[i * width + j] = lut[i] + lut[j];
    tb->m = m, tb->k = k, tb->cut = cut, tb->spare = (double)spare, tb->lut = lut;
    return 1;
}

/* coding_weights(x, offset, lut, out, n, m, k, cut, spare, unit): out[i, j] = unit * frequency - 1 (float64,
 * constriction's weights, see raqcodec.entropy). */
static PyObject *coding_weights(PyObject *self, PyObject *args) {
    (void)self;
    Buffers b = {0};
    Tables tb = {0};
    Py_ssize_t n, m, k;
    int cut;
    long long spare, unit;
    if (!PyArg_ParseTuple(args, "y*y*y*w*nnniLL", &b.x, &b.offset, &b.lut, &b.out, &n, &m, &k, &cut, &spare, &unit))
        return NULL;
    if (!prepare(&tb, &b, n, m, k, cut, spare)) return finish(&tb, &b, NULL);
    if (unit < 1 || unit > (1 << 8) || b.out.len != n * k * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "context kernel: bad output buffer or unit");
        return finish(&tb, &b, NULL);
    }
    double *w = tb.w;
    const double *x = b.x.buf, *offset = b.offset.buf;
    double *out = b.out.buf;
    const double du = (double)unit;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        double total;
        Py_ssize_t top = row_weights(&tb, x + i * m * k, offset + i * m, w, &total);
        double inverse = 1.0 / total, sums[4] = {0, 0, 0, 0};
        double *row = out + i * k;
        Py_ssize_t j = 0;
        for (; j + 4 <= k; j += 4) {
            for (int u = 0; u < 4; u++) {
                double q = share_of(w[j + u], tb.spare, total, inverse);
                sums[u] += q;
                row[j + u] = du * q + (du - 1);
            }
        }
        for (; j < k; j++) {
            double q = share_of(w[j], tb.spare, total, inverse);
            sums[0] += q;
            row[j] = du * q + (du - 1);
        }
        row[top] += du * (tb.spare - (sums[0] + sums[1] + sums[2] + sums[3]));
    }
    Py_END_ALLOW_THREADS
    return finish(&tb, &b, Py_NewRef(Py_None));
}

/* chosen_frequencies(x, offset, lut, chosen, out, n, m, k, cut, spare): out[i] = the frequency (int64) of
 * index chosen[i] in row i. */
static PyObject *chosen_frequencies(PyObject *self, PyObject *args) {
    (void)self;
    Buffers b = {0};
    Tables tb = {0};
    Py_ssize_t n, m, k;
    int cut;
    long long spare;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*nnniL", &b.x, &b.offset, &b.lut, &b.chosen, &b.out, &n, &m, &k, &cut,
                          &spare))
        return NULL;
    if (!prepare(&tb, &b, n, m, k, cut, spare)) return finish(&tb, &b, NULL);
    if (b.chosen.len != n * (Py_ssize_t)sizeof(int64_t) || b.out.len != n * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "context kernel: bad chosen or output buffer");
        return finish(&tb, &b, NULL);
    }
    const int64_t *chosen = b.chosen.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (chosen[i] < 0 || chosen[i] >= k) {
            PyErr_SetString(PyExc_ValueError, "context kernel: chosen index out of range");
            return finish(&tb, &b, NULL);
        }
    }
    double *w = tb.w;
    const double *x = b.x.buf, *offset = b.offset.buf;
    int64_t *out = b.out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        double total;
        Py_ssize_t top = row_weights(&tb, x + i * m * k, offset + i * m, w, &total);
        double inverse = 1.0 / total;
        double frequency = 1 + share_of(w[chosen[i]], tb.spare, total, inverse);
        if (chosen[i] == top) { /* the remainder of the rounding goes to the first largest weight */
            double shares = 0;
            for (Py_ssize_t j = 0; j < k; j++) shares += share_of(w[j], tb.spare, total, inverse);
            frequency += tb.spare - shares;
        }
        out[i] = (int64_t)frequency;
    }
    Py_END_ALLOW_THREADS
    return finish(&tb, &b, Py_NewRef(Py_None));
}

static PyMethodDef methods[] = {
    {"coding_weights", coding_weights, METH_VARARGS, "constriction weights of the context model's rows"},
    {"chosen_frequencies", chosen_frequencies, METH_VARARGS, "the frequency of one chosen index per row"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_context_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__context_kernel(void) { return PyModule_Create(&module); }
