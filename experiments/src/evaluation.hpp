#pragma once
// Evaluating a network on a fixed, jittered image set: the one loop shared by `eisim train`'s
// per-epoch test and validation accuracies and by `eisim evaluate`, so that evaluate reproduces
// the run file's numbers exactly.
#include <cstdint>
#include <vector>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/data.hpp"
#include "eisim/models/network.hpp"
#include "eisim/sim/forward.hpp"
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
/// With `transform`, each jittered image is then changed by io::apply_transform (drawing from
/// the same generator).
struct Transform {
  io::InputTransform kind;
  double value;
};
template <class S>
EvalResult evaluate_set(const models::Network<S>& net, const io::Dataset& d, double eps,
                        std::uint64_t seed, const sim::FixedPointParameters& fp,
                        const Transform* transform = nullptr);

/// Subtractive inhibition of E that has fallen silent, per hidden layer (docs/concepts.md, "When
/// the subtractive interneurons fall silent"). A population counts when it projects onto E
/// subtractively from an inhibitory source. For each hidden layer l:
///   samples[l]  samples in which every unit of those populations has rate 0 (the circuit no
///               longer removes E's mean drive),
///   units[l]    the fraction of those populations' units at rate 0, summed over samples,
///   applies[l]  the layer has such a population (false for layernorm and none: NaN fractions).
struct SilentInhibition {
  std::vector<double> samples, units;
  std::vector<char> applies;
  std::int64_t total = 0;  ///< samples counted

  /// Adds the samples of a forward pass through `net`.
  template <class S>
  void add(const models::Network<S>& net, const sim::ForwardCache<S>& cache);
  /// samples[l] / total, or NaN where the layer has no subtractive inhibition of E.
  std::vector<double> sample_fraction() const;
  std::vector<double> unit_fraction() const;
};

}  // namespace eisim::experiments
