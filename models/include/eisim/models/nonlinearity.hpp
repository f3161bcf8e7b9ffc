#pragma once
// Rate functions r = phi(v) and their derivatives, applied to whole matrices or arrays. The
// choice is dispatched once per call; the element loops are Eigen expressions. The one
// definition of every rate function in eisim.
#include <cmath>

#include "eisim/models/circuit.hpp"
#include "eisim/models/types.hpp"

namespace eisim::models {

template <class In, class Out>
void apply_phi(const NonlinearitySpec& spec, const In& v_in, Out& r) {
  using S = typename In::Scalar;
  const auto v = v_in.array();
  switch (spec.kind) {
    case Nonlinearity::relu:
      r = v.cwiseMax(S(0));
      break;
    case Nonlinearity::identity:
      r = v;
      break;
    case Nonlinearity::power:
      // The square (the ssn's exponent) as a product: exact to rounding, and the generic pow
      // was a third of the ssn's training epoch (docs/numerics.md, "Low-rank steps").
      if (spec.power == 2.0)
        r = S(spec.gain) * (v - S(spec.threshold)).cwiseMax(S(0)).square();
      else
        r = S(spec.gain) * (v - S(spec.threshold)).cwiseMax(S(0)).pow(S(spec.power));
      break;
    case Nonlinearity::sqrt:
      r = v.cwiseMax(S(0)).sqrt();
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
template <class In, class Out>
void phi_prime(const NonlinearitySpec& spec, const In& v_in, Out& d) {
  using S = typename In::Scalar;
  const auto v = v_in.array();
  switch (spec.kind) {
    case Nonlinearity::relu:
      d = (v > S(0)).template cast<S>();
      break;
    case Nonlinearity::identity:
      d = Out::Ones(v.rows(), v.cols());
      break;
    case Nonlinearity::power: {
      const S p = S(spec.power);
      const auto above = (v - S(spec.threshold)).cwiseMax(S(0));
      if (spec.power == 2.0)
        d = (v > S(spec.threshold)).select(S(spec.gain) * S(2) * above, S(0));
      else
        d = (v > S(spec.threshold)).select(S(spec.gain) * p * above.pow(p - S(1)), S(0));
      break;
    }
    case Nonlinearity::sqrt:
      d = (v > S(0)).select(S(0.5) / v.cwiseMax(S(0)).sqrt(), S(0));
      break;
    case Nonlinearity::softplus: {
      const S beta = S(spec.beta);
      d = v.unaryExpr([beta](S x) { return S(1) / (S(1) + std::exp(-beta * x)); });
      break;
    }
  }
}

}  // namespace eisim::models
