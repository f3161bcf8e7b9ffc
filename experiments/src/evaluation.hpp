#pragma once
// Evaluating a network on a fixed, jittered image set: the one loop shared by `eisim train`'s
// per-epoch test and validation accuracies and by `eisim evaluate`, so that evaluate reproduces
// the run file's numbers exactly.
#include <cstdint>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/data.hpp"
#include "eisim/models/network.hpp"
#include "eisim/sim/solver.hpp"

namespace eisim::experiments {

/// Images per forward batch of an evaluation (fixed: the float32 results depend on it).
inline constexpr int kEvalBatch = 500;

/// The jitter seed of image set `set` at eval eps index k: the test set's is
/// data.test_seed + 1000 (k + 1), the validation set's the same + 500 (docs/hdf5.md).
enum class EvalSet { test, validation };
inline std::uint64_t eval_seed(std::uint64_t test_seed, std::size_t k, EvalSet set) {
  return test_seed + 1000 * (k + 1) + (set == EvalSet::validation ? 500 : 0);
}

/// Every image of `d` (in order, batches of kEvalBatch), jittered with eps from a generator
/// seeded with `seed` (one draw per image, in order), through `net`.
template <class S>
EvalResult evaluate_set(const models::Network<S>& net, const io::Dataset& d, double eps,
                        std::uint64_t seed, const sim::FixedPointParameters& fp);

}  // namespace eisim::experiments
