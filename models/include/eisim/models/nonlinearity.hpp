#pragma once
// Output nonlinearities r = phi(v), applied to whole matrices. The choice is dispatched once
// per call; the element loops are Eigen expressions.
#include "eisim/models/network.hpp"

namespace eisim::models {

template <class S>
void apply_phi(const NonlinearitySpec& spec, const Mat<S>& v, Mat<S>& r) {
  switch (spec.kind) {
    case Nonlinearity::relu:
      r = v.cwiseMax(S(0));
      break;
    case Nonlinearity::identity:
      r = v;
      break;
    case Nonlinearity::power:
      r = v.cwiseMax(S(0)).array().pow(S(spec.power)).matrix();
      break;
    case Nonlinearity::softplus: {
      const S beta = S(spec.beta);
      // log(1 + exp(beta v)) / beta, written to avoid overflow for large beta v.
      r = v.unaryExpr([beta](S x) {
        const S z = beta * x;
        return (z > S(0) ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z))) / beta;
      });
      break;
    }
  }
}

/// d phi / d v evaluated at v.
template <class S>
void phi_prime(const NonlinearitySpec& spec, const Mat<S>& v, Mat<S>& d) {
  switch (spec.kind) {
    case Nonlinearity::relu:
      d = (v.array() > S(0)).template cast<S>().matrix();
      break;
    case Nonlinearity::identity:
      d.setOnes(v.rows(), v.cols());
      break;
    case Nonlinearity::power: {
      const S p = S(spec.power);
      d = (p * v.cwiseMax(S(0)).array().pow(p - S(1))).matrix();
      break;
    }
    case Nonlinearity::softplus: {
      const S beta = S(spec.beta);
      d = v.unaryExpr([beta](S x) { return S(1) / (S(1) + std::exp(-beta * x)); });
      break;
    }
  }
}

}  // namespace eisim::models
