#pragma once
// The stability tests' independent reference: every eigenvalue of a Jacobian by Eigen's dense
// solver, classified as the check classifies its own (sim::classify).
#include <doctest/doctest.h>

#include <Eigen/Eigenvalues>

#include "eisim/sim/stability.hpp"

namespace eisim::test {

inline sim::SampleStability dense_reference(const Eigen::MatrixXd& J, int keep) {
  sim::StabilityParameters sp;
  sp.keep = keep;
  const Eigen::EigenSolver<Eigen::MatrixXd> es(J, false);
  REQUIRE(es.info() == Eigen::Success);
  return sim::classify(es.eigenvalues(), sp);
}

}  // namespace eisim::test
