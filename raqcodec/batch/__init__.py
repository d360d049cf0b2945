"""Batch encoding and decoding behind ``raqcodec encode`` / ``raqcodec decode``: files, directory trees and
glob patterns in, one output per input (beside it, or at the mirrored path under ``-o DIR``), in worker
processes that each load the model once.

A run is: ``plan.plan`` (find the inputs, map each to its output, refuse collisions and escapes) ->
``plan.select_shard`` (a stable 1/N of the plan) -> ``run.run`` (sweep stale temporary files, sort existing
outputs into raqcodec's own and anything else, check the output folders can be written, do the rest here
or in worker processes, report each file as it finishes). docs/DESIGN.md, "Batch runs" and "Existing
outputs", states the policies: what is skipped, redone or refused, the shard hash, temporary files and
symbolic links.

Modules: ``jobs`` (what a run is made of), ``plan`` (inputs to jobs, shards), ``outputs`` (what is already
at an output path, refusals, stale temporary files), ``work`` (one file, in whichever process), ``run``
(a whole run and its summary, on ``raqcodec.pool``'s worker processes). The package imports neither torch
nor the model: a rerun that skips everything never loads them, and worker processes import it cheaply
before they load the model.
"""
