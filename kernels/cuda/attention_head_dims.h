// The head dims that have a CUDA attention kernel: the one list that the instances (CMake reads it
// and generates a unit per head dim and dtype), the dispatch and the argument checks use.
// Plain C++ (no CUDA header): csrc/ includes it through attention.h. Keep the list on one line of
// X(<digits>) items: CMake reads it with a regular expression.
#pragma once

#define SDRT_CUDA_ATTENTION_HEAD_DIMS(X) X(40) X(64) X(80) X(160)
