// The circuit's equations: drives, conductances, right-hand side, residual and the
// vector-Jacobian product, for any populations and projections. See docs/concepts.md.
#include "eisim/sim/circuit.hpp"

#include <cmath>

#include "eisim/models/error.hpp"
#include "eisim/models/nonlinearity.hpp"

namespace eisim::sim {

using models::Layer;

template <class S>
void initial_state(const Layer<S>& layer, int batch, CircuitState<S>& z) {
  const auto& pops = layer.spec.circuit.populations;
  z.z.resize(pops.size());
  for (std::size_t p = 0; p < pops.size(); ++p)
    z.z[p].setConstant(pops[p].size, batch, S(pops[p].initial));
}

template <class S>
void circuit_input(const Layer<S>& layer, const Mat<S>& x, CircuitInput<S>& in) {
  const auto& spec = layer.spec;
  const auto& c = spec.circuit;
  in.x = x;
  in.ext.resize(c.populations.size());
  in.ux.resize(c.projections.size());
  // Which populations have an external drive (the others keep an empty matrix); buffers are
  // reused from batch to batch.
  std::vector<char> driven(c.populations.size(), 0);
  driven[0] = 1;
  for (const auto& pr : c.projections)
    if (pr.src < 0) driven[pr.tgt] = 1;
  for (std::size_t p = 1; p < driven.size(); ++p)
    if (driven[p])
      in.ext[p].setZero(c.populations[p].size, x.cols());
    else
      in.ext[p].resize(0, 0);
  in.ext[0].noalias() = layer.w.W_EX * x;
  in.ext[0].colwise() += layer.w.b.col(0);
  for (std::size_t k = 0; k < c.projections.size(); ++k) {
    const auto& pr = c.projections[k];
    if (pr.src >= 0) {
      in.ux[k].resize(0, 0);
      continue;
    }
    const Mat<S>& W = layer.w.at(spec.projection_weight[k]);
    Mat<S>& ext = in.ext[pr.tgt];
    if (pr.signal == models::Signal::input) {
      ext.noalias() += W * x;
    } else {  // input_energy: W (U x)^2
      in.ux[k].noalias() = layer.w.at(spec.energy_weight[k]) * x;
      ext.noalias() += W * in.ux[k].cwiseAbs2();
    }
  }
}

namespace {

// out += sign * W s (sign +-1). A projection from a single unit (W one column, s one row) is an
// outer product: written as one, Eigen runs a scaled copy per column instead of a depth-1 GEMM.
template <class S>
void add_product(Mat<S>& out, const Mat<S>& W, const Mat<S>& s, int sign) {
  if (W.cols() == 1) {
    if (sign > 0)
      out.noalias() += W.col(0) * s.row(0);
    else
      out.noalias() -= W.col(0) * s.row(0);
  } else if (sign > 0) {
    out.noalias() += W * s;
  } else {
    out.noalias() -= W * s;
  }
}

}  // namespace

template <class S>
void evaluate(const Layer<S>& layer, const CircuitInput<S>& in, const CircuitState<S>& z,
              CircuitTerms<S>& t, const EvalNeeds& needs) {
  const auto& spec = layer.spec;
  const auto& c = spec.circuit;
  const std::size_t P = c.populations.size(), K = c.projections.size();
  if (z.z.size() != P) throw internal_error("evaluate: state does not match the circuit");
  const int B = int(z.v().cols());
  for (auto* v : {&t.rate, &t.drate, &t.q, &t.g, &t.F, &t.dF_dz, &t.dF_dq, &t.dF_dg}) v->resize(P);
  t.signal.resize(K);
  t.dsignal.resize(K);
  auto wanted = [&](int p) { return needs.targets.empty() || needs.targets[p]; };
  // Rates of the sources that carry them into a wanted target.
  std::vector<char> rate(P, 0);
  for (const auto& pr : c.projections)
    if (pr.src >= 0 && wanted(pr.tgt) && pr.signal == models::Signal::rate) rate[pr.src] = 1;
  for (std::size_t p = 0; p < P; ++p)
    if (rate[p])
      population_rate(c.populations[p], z.z[p], t.rate[p], needs.dsignal ? &t.drate[p] : nullptr);
  for (std::size_t p = 0; p < P; ++p) {
    if (!wanted(int(p))) continue;
    if (in.ext[p].size() > 0)
      t.q[p] = in.ext[p];
    else
      t.q[p].setZero(c.populations[p].size, B);
  }
  // Conductances: the baseline where a projection divides (the buffer reused from call to
  // call), none (empty) elsewhere.
  std::vector<char> shunted(P, 0);
  for (const auto& pr : c.projections)
    if (pr.src >= 0 && wanted(pr.tgt) && pr.action == models::Action::divisive) shunted[pr.tgt] = 1;
  for (std::size_t p = 0; p < P; ++p) {
    if (!wanted(int(p))) continue;
    if (shunted[p])
      t.g[p].setConstant(c.populations[p].size, B, S(c.populations[p].conductance));
    else
      t.g[p].resize(0, 0);
  }
  for (std::size_t k = 0; k < K; ++k) {
    const auto& pr = c.projections[k];
    if (pr.src < 0 || !wanted(pr.tgt)) continue;  // input projections are in the drive
    projection_signal(pr, z.z[pr.src], t.rate[pr.src], t.drate[pr.src], t.signal[k],
                      needs.dsignal ? &t.dsignal[k] : nullptr);
    const Mat<S>& W = layer.w.at(spec.projection_weight[k]);
    if (pr.action == models::Action::subtractive) {
      add_product(t.q[pr.tgt], W, t.signal[k], models::source_sign(pr) > 0 ? 1 : -1);
    } else {
      add_product(t.g[pr.tgt], W, t.signal[k], 1);
    }
  }
  for (std::size_t p = 0; p < P; ++p) {
    if (!wanted(int(p))) continue;
    const Mat<S>* g = t.g[p].size() > 0 ? &t.g[p] : nullptr;
    if (needs.partials)
      population_terms(c.populations[p], z.z[p], t.q[p], g, t.F[p], t.dF_dz[p], t.dF_dq[p],
                       &t.dF_dg[p], needs.local);
    else
      population_terms(c.populations[p], z.z[p], t.q[p], g, t.F[p], t.dF_dz[p], t.dF_dq[p],
                       static_cast<Mat<S>*>(nullptr));
  }
}

template <class S>
void circuit_rhs(const Layer<S>& layer, const CircuitInput<S>& in, const CircuitState<S>& z,
                 CircuitState<S>& d) {
  CircuitTerms<S> t;
  evaluate(layer, in, z, t, false);
  const auto& pops = layer.spec.circuit.populations;
  d.z.resize(pops.size());
  for (std::size_t p = 0; p < pops.size(); ++p) d.z[p] = t.F[p] / S(pops[p].tau);
}

template <class S>
void circuit_residual(const Layer<S>& layer, const CircuitInput<S>& in, const CircuitState<S>& z,
                      const Tolerance& tol, std::vector<double>& residual,
                      std::vector<double>& scaled) {
  CircuitTerms<S> t;
  evaluate(layer, in, z, t, false);
  const int B = int(z.v().cols());
  residual.assign(B, 0.0);
  scaled.assign(B, 0.0);
  for (std::size_t p = 0; p < t.F.size(); ++p) {
    const Mat<S>& F = t.F[p];
    const Mat<S>& zz = z.z[p];
    for (int j = 0; j < B; ++j)
      for (int i = 0; i < F.rows(); ++i) {
        const double r = std::abs(double(F(i, j)));
        const double s = r / (tol.abs_tol + tol.rel_tol * std::abs(double(zz(i, j))));
        // NaN propagates: max with NaN must report NaN.
        if (!(r <= residual[j])) residual[j] = r;
        if (!(s <= scaled[j])) scaled[j] = s;
      }
  }
}

template <class S>
void vjp(const Layer<S>& layer, const CircuitInput<S>& in, const CircuitTerms<S>& t,
         const std::vector<Mat<S>>& w, models::LayerWeights<S>* grads, std::vector<Mat<S>>* dz,
         std::vector<Mat<S>>* dext, Mat<S>* dx) {
  const auto& spec = layer.spec;
  const auto& c = spec.circuit;
  const std::size_t P = c.populations.size();
  std::vector<Mat<S>> uq(P), ug(P);  // w * dF/dq, w * dF/dg
  for (std::size_t p = 0; p < P; ++p) {
    if (p >= w.size() || w[p].size() == 0) continue;
    uq[p] = w[p].cwiseProduct(t.dF_dq[p]);
    if (t.g[p].size() > 0) ug[p] = w[p].cwiseProduct(t.dF_dg[p]);
    if (dz) {
      Mat<S>& d = (*dz)[p];
      if (d.size() == 0)
        d = w[p].cwiseProduct(t.dF_dz[p]);
      else
        d += w[p].cwiseProduct(t.dF_dz[p]);
    }
  }
  Mat<S> back;
  for (std::size_t k = 0; k < c.projections.size(); ++k) {
    const auto& pr = c.projections[k];
    if (uq[pr.tgt].size() == 0) continue;
    const int wi = spec.projection_weight[k];
    const Mat<S>& W = layer.w.at(wi);
    if (pr.src >= 0) {
      // The cotangent of the projection's product: sign * w dF/dq, or w dF/dg (the sign, +-1,
      // as the products' scale factor: no temporary).
      const bool sub = pr.action == models::Action::subtractive;
      const Mat<S>& coef = sub ? uq[pr.tgt] : ug[pr.tgt];
      const S sign = sub ? S(models::source_sign(pr)) : S(1);
      if (grads) grads->at(wi).noalias() += (sign * coef) * t.signal[k].transpose();
      if (dz) {
        back.noalias() = W.transpose() * (sign * coef);
        Mat<S>& d = (*dz)[pr.src];
        if (d.size() == 0)
          d = back.cwiseProduct(t.dsignal[k]);
        else
          d += back.cwiseProduct(t.dsignal[k]);
      }
    } else if (pr.signal == models::Signal::input) {
      if (grads) grads->at(wi).noalias() += uq[pr.tgt] * in.x.transpose();
      if (dx) dx->noalias() += W.transpose() * uq[pr.tgt];
    } else {  // input_energy: ext += W (U x)^2
      const int ui = spec.energy_weight[k];
      if (grads) grads->at(wi).noalias() += uq[pr.tgt] * in.ux[k].cwiseAbs2().transpose();
      back.noalias() = W.transpose() * uq[pr.tgt];
      const Mat<S> d_ux = (S(2) * in.ux[k].array() * back.array()).matrix();
      if (grads) grads->at(ui).noalias() += d_ux * in.x.transpose();
      if (dx) dx->noalias() += layer.w.at(ui).transpose() * d_ux;
    }
  }
  if (dext) {  // uq is not read after this: handed over, not copied
    dext->resize(P);
    for (std::size_t p = 0; p < P; ++p) (*dext)[p].swap(uq[p]);
  }
}

#define EISIM_INSTANTIATE(S)                                                                       \
  template void initial_state<S>(const Layer<S>&, int, CircuitState<S>&);                          \
  template void circuit_input<S>(const Layer<S>&, const Mat<S>&, CircuitInput<S>&);                \
  template void evaluate<S>(const Layer<S>&, const CircuitInput<S>&, const CircuitState<S>&,       \
                            CircuitTerms<S>&, const EvalNeeds&);                                   \
  template void circuit_rhs<S>(const Layer<S>&, const CircuitInput<S>&, const CircuitState<S>&,    \
                               CircuitState<S>&);                                                  \
  template void circuit_residual<S>(const Layer<S>&, const CircuitInput<S>&,                       \
                                    const CircuitState<S>&, const Tolerance&,                      \
                                    std::vector<double>&, std::vector<double>&);                   \
  template void vjp<S>(const Layer<S>&, const CircuitInput<S>&, const CircuitTerms<S>&,            \
                       const std::vector<Mat<S>>&, models::LayerWeights<S>*, std::vector<Mat<S>>*, \
                       std::vector<Mat<S>>*, Mat<S>*);
EISIM_INSTANTIATE(float)
EISIM_INSTANTIATE(double)
#undef EISIM_INSTANTIATE

}  // namespace eisim::sim
