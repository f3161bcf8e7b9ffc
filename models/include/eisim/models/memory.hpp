#pragma once
// Process-wide memory settings for programs that train or benchmark.

namespace eisim::models {

/// Keep freed heap memory in the process instead of returning it to the operating system
/// (glibc: large trim and mmap thresholds; no effect elsewhere). The batch-sized temporaries of a
/// training step (290 KB for 283 units x 256 samples in float32) are above glibc's default
/// thresholds, so without this every step maps fresh pages and takes a page fault per 4 KB:
/// the frozen rule's backward pass of one circuit layer ran 4.3x slower at batch 256
/// (bench/README.md, "bench_pieces"). Peak memory is unchanged. Call once at program start.
void keep_freed_memory();

}  // namespace eisim::models
