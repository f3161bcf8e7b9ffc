#pragma once
#include <Eigen/Core>

namespace eisim {

/// Column-major dense matrix; batches are stored one sample per column.
template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
template <class S>
using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;

}  // namespace eisim
