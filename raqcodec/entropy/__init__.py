"""Entropy coding of what the model produces, exact on every machine: the index coders behind one interface
(``coders``: order-0 and context), order-0 tables (``order0``), the context model in integer arithmetic
(``context``, with its C kernel ``_context_kernel.c``), how its work is cut up (``schedule``) and shared
out (``workers``), and the residual stage's symbol coder under frozen tables (``gaussian``).
"""
