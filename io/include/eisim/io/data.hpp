#pragma once
// Fashion-MNIST (IDX files, gzip-compressed) and the brightness jitter of the reference study:
// every use of an image adds d ~ U(-eps, eps) to all its pixels, then clips to [0, 1].
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "eisim/models/types.hpp"

namespace eisim::io {

struct Dataset {
  Mat<float> images;                 ///< 784 x N, one image per column (row-major pixels), [0, 1]
  std::vector<std::uint8_t> labels;  ///< N labels in 0..9
  int rows = 28, cols = 28;
  int size() const { return static_cast<int>(labels.size()); }
};

/// Load the training set (train = true, 60000 images) or the test set (10000 images) from
/// `dir`/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (the uncompressed names are accepted
/// too). `limit` > 0 keeps the first `limit` images. Throws data_error (file, byte offset in the
/// decompressed stream) if a file is missing or malformed, or if the two files disagree.
Dataset load_fashion_mnist(const std::string& dir, bool train, int limit = 0);

/// Images [first, first + n) of `d`, in order. Throws eisim::error if the range is outside `d`.
Dataset slice(const Dataset& d, int first, int n);

/// The images of a training run (data.validation, docs/config.md).
struct TrainingData {
  Dataset train;             ///< what is trained on
  Dataset validation;        ///< held out, never trained on (empty if validation = 0)
  int validation_first = 0;  ///< index in the training file of the first validation image
};

/// The training file of `dir` split for data.validation = `validation` (>= 0): the validation
/// set is the file's last `validation` images; the training set is the first `train_limit`
/// (0 = all) of the images before them, so the two never share an image, and the validation
/// set does not depend on train_limit or on any seed (the file is in random order). With
/// validation = 0 this is load_fashion_mnist(dir, true, train_limit). Throws data_error if the
/// file holds no image to train on, config_error ("data.train_limit") if train_limit exceeds the
/// images left.
TrainingData load_training_data(const std::string& dir, int train_limit, int validation);

/// The images of an IDX3 file (magic 0x00000803, 28 x 28 unsigned bytes) as pixel / 255,
/// one image per column. `limit` > 0 reads only the first `limit` images.
Mat<float> read_idx_images(const std::string& gz_path, int limit = 0);

/// The labels of an IDX1 file (magic 0x00000801), each checked to be <= 9.
std::vector<std::uint8_t> read_idx_labels(const std::string& gz_path, int limit = 0);

/// Brightness jitter, in place: for each column j draw d_j ~ U(-eps, eps) (one draw per column,
/// in column order), add it to every pixel of the column and clip to [0, 1]. eps == 0 leaves x
/// unchanged and draws nothing. The draw uses the top 53 bits of one rng() call, so a seed gives
/// the same shifts on every platform. Throws eisim::error unless 0 <= eps <= 1.
template <class S>
void apply_jitter(Eigen::Ref<Mat<S>> x, double eps, std::mt19937_64& rng);

/// The test-set transformations of `eisim evaluate` (config keys evaluate.*), each followed by
/// clipping to [0, 1]:
///   shift     x + value for every pixel (a fixed brightness change, value in [-1, 1]);
///   contrast  value * x (value >= 0; 0.5 halves every pixel);
///   noise     x + n, n ~ N(0, value^2) independently per pixel (value >= 0), drawn in column-major
///             order from `rng` by the Box-Muller transform of the top 53 bits of rng() calls
///             (the same on every platform).
/// Brightness jitter (random per image) is apply_jitter with data.eval_eps.
enum class InputTransform { shift, contrast, noise };
const char* to_string(InputTransform t);
template <class S>
void apply_transform(Eigen::Ref<Mat<S>> x, InputTransform t, double value, std::mt19937_64& rng);

}  // namespace eisim::io
