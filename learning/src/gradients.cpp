// Forward pass and the learning rules' backward passes. Derivations: docs/concepts.md.
#include "eisim/learning/gradients.hpp"

#include <Eigen/LU>
#include <cmath>
#include <limits>
#include <sstream>

#include "eisim/models/error.hpp"
#include "eisim/models/nonlinearity.hpp"

namespace eisim::learning {

using models::InhibitionDrive;
using models::Layer;
using models::LayerKind;
using models::LayerWeights;
using Md = Eigen::MatrixXd;
using Vd = Eigen::VectorXd;

const char* to_string(Rule r) {
  switch (r) {
    case Rule::implicit:
      return "implicit";
    case Rule::frozen:
      return "frozen";
    case Rule::bptt:
      return "bptt";
  }
  return "unknown";
}

const char* to_string(ErrorTransform t) {
  switch (t) {
    case ErrorTransform::none:
      return "none";
    case ErrorTransform::center:
      return "center";
    case ErrorTransform::scale:
      return "scale";
    case ErrorTransform::decorrelate:
      return "decorrelate";
    case ErrorTransform::full:
      return "full";
    case ErrorTransform::lateral:
      return "lateral";
  }
  return "unknown";
}

bool is_trained(const models::LayerSpec& spec, const std::string& name, bool train_inhibitory) {
  if (name == "W_EX" || name == "b") return true;
  if (name == "L_pool" || name == "L_back") return false;
  if (!train_inhibitory) return false;
  switch (spec.kind) {
    case LayerKind::none:
      return name == "W_EI" || name == "W_IX";
    case LayerKind::layernorm:
      return false;
    case LayerKind::circuit:
      // Feed-forward interneurons learn their input weights from the local homeostatic loss;
      // the feedback circuit's pooling weights are its homeostatic machinery and stay fixed.
      return spec.circuit.drive == InhibitionDrive::feedforward && (name == "W_IX" || name == "U");
  }
  return false;
}

template <class S>
void Gradients<S>::zero_like(const models::Network<S>& net, bool keep_overwritten) {
  layers.resize(net.layers.size());
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    auto& g = layers[l];
    const auto& w = net.layers[l].w;
    auto z = [](Mat<S>& dst, const Mat<S>& src) { dst.setZero(src.rows(), src.cols()); };
    if (keep_overwritten) {
      g.W_EX.resize(w.W_EX.rows(), w.W_EX.cols());
      g.b.resize(w.b.rows(), w.b.cols());
    } else {
      z(g.W_EX, w.W_EX);
      z(g.b, w.b);
    }
    z(g.W_EI, w.W_EI);
    z(g.W_ED, w.W_ED);
    z(g.W_IE, w.W_IE);
    z(g.W_DE, w.W_DE);
    z(g.W_IX, w.W_IX);
    z(g.U, w.U);
    z(g.L_pool, w.L_pool);
    z(g.L_back, w.L_back);
  }
  adjoint = AdjointStats{};
}

// ------------------------------------------------------------------------------------ forward

template <class S>
ForwardStats forward(const models::Network<S>& net, const Mat<S>& x,
                     const sim::FixedPointParameters& fp, ForwardCache<S>& cache) {
  cache.layers.resize(net.layers.size());
  ForwardStats stats;
  const Mat<S>* in = &x;
  double iter_sum = 0;
  int circuits = 0;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const Layer<S>& layer = net.layers[l];
    LayerCache<S>& c = cache.layers[l];
    c.x = *in;
    sim::excitatory_drive(layer.w, c.x, c.e);
    const int B = int(x.cols());
    switch (layer.spec.kind) {
      case LayerKind::none:
        c.aux.noalias() = layer.w.W_IX * c.x;
        c.z.v = c.e;
        c.z.v.noalias() -= layer.w.W_EI * c.aux;
        break;
      case LayerKind::layernorm: {
        const S theta = S(layer.spec.circuit.theta);
        c.z.v = c.e.rowwise() - c.e.colwise().mean();
        c.aux = ((c.z.v.cwiseAbs2().colwise().mean().array() + S(layer.spec.ln_epsilon)).rsqrt())
                    .matrix();
        c.z.v = (c.z.v.array().rowwise() * (std::sqrt(theta) * c.aux.row(0).array())).matrix();
        break;
      }
      case LayerKind::circuit: {
        // Every batch starts from the same initial state, so results do not depend on history.
        sim::initial_state(layer, B, c.z);
        c.solve = sim::solve_fixed_point(layer, c.e, c.x, fp, c.z);
        stats.iterations_max = std::max(stats.iterations_max, c.solve.iterations);
        for (int it : c.solve.sample_iterations) iter_sum += it;
        ++circuits;
        stats.failed_samples += c.solve.failed_samples;
        stats.fallback_samples += c.solve.fallback_samples;
        if (!(c.solve.residual <= stats.worst_residual)) stats.worst_residual = c.solve.residual;
        break;
      }
    }
    models::apply_phi(layer.spec.phi, c.z.v, c.r);
    in = &c.r;
  }
  if (circuits > 0) stats.iterations_mean = iter_sum / (double(circuits) * double(x.cols()));
  return stats;
}

// --------------------------------------------------------------------------------------- loss

template <class S>
double cross_entropy(const Mat<S>& logits, const std::vector<int>& labels, double smoothing,
                     Mat<S>& dlogits, int* correct) {
  const int K = int(logits.rows()), B = int(logits.cols());
  if (int(labels.size()) != B) throw internal_error("cross_entropy: label count != batch size");
  dlogits.resize(K, B);
  double loss = 0;
  int hits = 0;
  for (int j = 0; j < B; ++j) {
    Eigen::Index arg;
    const double m = double(logits.col(j).maxCoeff(&arg));
    if (arg == labels[j]) ++hits;
    double z = 0;
    for (int k = 0; k < K; ++k) z += std::exp(double(logits(k, j)) - m);
    const double logz = m + std::log(z);
    for (int k = 0; k < K; ++k) {
      const double target = (k == labels[j] ? 1.0 - smoothing : 0.0) + smoothing / K;
      const double logp = double(logits(k, j)) - logz;
      loss -= target * logp;
      dlogits(k, j) = S((std::exp(logp) - target) / B);
    }
  }
  if (correct) *correct = hits;
  return loss / B;
}

// ------------------------------------------------------------------------------------ backward

namespace {

// Per-sample column statistics.
template <class S>
Mat<S> col_mean(const Mat<S>& m) {
  return m.colwise().mean();
}

template <class S>
void frozen_feedback_grads(const LayerWeights<S>& w, const sim::CircuitState<S>& z,
                           const Mat<S>& delta_e, LayerWeights<S>& g) {
  // Direct (inhibition held constant) dependence of v on W_EI and W_ED.
  g.W_EI.noalias() = -delta_e * z.r_I.cwiseMax(S(0)).transpose();
  g.W_ED.noalias() = -(delta_e.cwiseProduct(z.v)) * z.r_D.cwiseMax(S(0)).transpose();
  (void)w;
}

template <class S>
Mat<S> shunting_gain(const Layer<S>& layer, const sim::CircuitState<S>& z) {
  Mat<S> g = layer.w.W_ED * z.r_D.cwiseMax(S(0));
  g.array() += S(layer.spec.circuit.sigma0);
  return g;
}

// Implicit gradient of a feedback circuit: per-sample adjoint solve of the reduced system
// J_red^T a_r = B^T g_v with J_red = D + C B (see docs/concepts.md); then
// a_v = C^T a_r - g_v and dL/de = -a_v / g.
// The adjoint solve of one sample for the pooled circuit (n_I = n_D = 1): the same equations as
// the general code below, with J (2 x 2) and B^T g_v formed by vectorised sums over the E units
// (the arrays stay in L1) and no matrix temporaries. Writes delta_e; returns the adjoint in a.
struct PooledAdjoint {
  using Ad = Eigen::ArrayXd;
  Eigen::Map<const Ad> wEI, wED, wIE, wDE;
  const models::CircuitParams& p;
  Ad v, gv, ig, b0, b1, dv;  // per-sample workspace

  PooledAdjoint(const Md& W_EI, const Md& W_ED, const Md& W_IE, const Md& W_DE,
                const models::CircuitParams& p_, int n_E)
      : wEI(W_EI.data(), n_E),
        wED(W_ED.data(), n_E),
        wIE(W_IE.data(), n_E),
        wDE(W_DE.data(), n_E),
        p(p_),
        v(n_E),
        gv(n_E),
        ig(n_E),
        b0(n_E),
        b1(n_E),
        dv(n_E) {}

  template <class S>
  void solve(const Mat<S>& V, const Mat<S>& r_I, const Mat<S>& r_D, const Mat<S>& G_v, int j,
             Mat<S>& delta_e, double a[2], double& rcond, double& resid) {
    const double rI = double(r_I(0, j)), rD = double(r_D(0, j)), rDp = std::max(rD, 0.0);
    v = V.col(j).template cast<double>();
    gv = G_v.col(j).template cast<double>();
    ig = (wED * rDp + p.sigma0).inverse();
    b0 = -wEI * ig;  // B = dv/dr = [-w_EI / g, -w_ED v / g]
    b1 = -wED * v * ig;
    dv = wDE * v;
    // J = C B + D with C = [k_I w_IE; 2 k_D r_D (w_DE v)].
    double j00 = p.k_I * (wIE * b0).sum() - p.lambda_I;
    double j01 = p.k_I * (wIE * b1).sum();
    double j10 = 2.0 * p.k_D * rD * (dv * b0).sum();
    const double j11 =
        2.0 * p.k_D * rD * (dv * b1).sum() + p.k_D * ((dv * v).sum() - p.theta) - p.lambda_D;
    double rhs0 = (b0 * gv).sum();
    const double rhs1 = (b1 * gv).sum();
    // A subtractive interneuron clamped at 0 is a constant.
    if (rI <= 0.0 && p.k_I * (wIE * v).sum() - p.lambda_I * rI < 0.0) {
      j00 = 1.0;
      j01 = j10 = 0.0;
      rhs0 = 0.0;
    }
    // Solve J^T a = rhs (Cramer); exact 1-norm reciprocal condition number of J^T.
    const double det = j00 * j11 - j01 * j10;
    a[0] = (rhs0 * j11 - j10 * rhs1) / det;
    a[1] = (j00 * rhs1 - j01 * rhs0) / det;
    const double n1 = std::max(std::abs(j00) + std::abs(j01), std::abs(j10) + std::abs(j11));
    const double ninv = std::max(std::abs(j11) + std::abs(j01), std::abs(j10) + std::abs(j00));
    rcond = det != 0.0 ? std::abs(det) / (n1 * ninv) : 0.0;
    const double r0 = j00 * a[0] + j10 * a[1] - rhs0, r1 = j01 * a[0] + j11 * a[1] - rhs1;
    const double rn = std::hypot(rhs0, rhs1);
    resid = std::hypot(r0, r1) / (rn > 0 ? rn : 1.0);
    // a_v = C^T a - g_v, dL/de = -a_v / g.
    const double c0 = p.k_I * a[0], c1 = 2.0 * p.k_D * rD * a[1];
    delta_e.col(j) = ((gv - wIE * c0 - dv * c1) * ig).template cast<S>().matrix();
  }
};

template <class S>
void implicit_feedback(const Layer<S>& layer, const LayerCache<S>& c, const Mat<S>& g_v,
                       bool pooled_fast_path, Mat<S>& delta_e, LayerWeights<S>& g,
                       AdjointStats& st) {
  const auto& p = layer.spec.circuit;
  const int n_E = layer.spec.n_E, n_I = p.n_I, n_D = p.n_D, n_r = n_I + n_D;
  const int B = int(g_v.cols());
  const Md W_EI = layer.w.W_EI.template cast<double>(), W_ED = layer.w.W_ED.template cast<double>();
  const Md W_IE = layer.w.W_IE.template cast<double>(), W_DE = layer.w.W_DE.template cast<double>();
  Mat<S> a_I(n_I, B), a_D(n_D, B);
  delta_e.resize(n_E, B);
  std::vector<double> resid(B, 0.0), rcond(B, 1.0);
  std::vector<char> bad(B, 0);
  const bool pooled = n_I == 1 && n_D == 1 && pooled_fast_path;
  if (pooled) {
#pragma omp parallel if (B >= 128)
    {
      PooledAdjoint pa(W_EI, W_ED, W_IE, W_DE, p, n_E);
      double a[2];
#pragma omp for schedule(static)
      for (int j = 0; j < B; ++j) {
        pa.solve(c.z.v, c.z.r_I, c.z.r_D, g_v, j, delta_e, a, rcond[j], resid[j]);
        if (!std::isfinite(a[0]) || !std::isfinite(a[1]) || !(rcond[j] > 1e-14) ||
            !(resid[j] < 1e-6))
          bad[j] = 1;
        a_I(0, j) = S(a[0]);
        a_D(0, j) = S(a[1]);
      }
    }
  } else {
#pragma omp parallel if (B >= 128)
    {
      Md Bm(n_E, n_r), J(n_r, n_r), Cv(n_r, n_E);
      Vd v(n_E), gg(n_E), rI(n_I), rD(n_D), q(n_D), rhs(n_r), a(n_r), av(n_E), gv(n_E);
      Eigen::PartialPivLU<Md> lu(n_r);
#pragma omp for schedule(static)
      for (int j = 0; j < B; ++j) {
        v = c.z.v.col(j).template cast<double>();
        rI = c.z.r_I.col(j).template cast<double>();
        rD = c.z.r_D.col(j).template cast<double>();
        gv = g_v.col(j).template cast<double>();
        gg.noalias() = W_ED * rD.cwiseMax(0.0);
        gg.array() += p.sigma0;
        // B = dv/dr = [-diag(1/g) W_EI, -diag(v/g) W_ED]
        Bm.leftCols(n_I) = -(W_EI.array().colwise() / gg.array()).matrix();
        Bm.rightCols(n_D) = -(W_ED.array().colwise() * (v.array() / gg.array())).matrix();
        // C = dF_r/dv = [k_I W_IE; k_D diag(r_D) W_DE diag(2v)]
        Cv.topRows(n_I) = p.k_I * W_IE;
        Cv.bottomRows(n_D) = ((p.k_D * W_DE).array().colwise() * rD.array()).rowwise() *
                             (2.0 * v).transpose().array();
        J.noalias() = Cv * Bm;
        J.topLeftCorner(n_I, n_I).diagonal().array() -= p.lambda_I;
        q.noalias() = W_DE * v.cwiseAbs2();
        J.bottomRightCorner(n_D, n_D).diagonal().array() +=
            (p.k_D * (q.array() - p.theta) - p.lambda_D);
        rhs.noalias() = Bm.transpose() * gv;
        // Interneurons clamped at 0 are constants.
        for (int k = 0; k < n_I; ++k) {
          const double drive = p.k_I * W_IE.row(k).dot(v) - p.lambda_I * rI(k);
          if (rI(k) <= 0.0 && drive < 0.0) {
            J.row(k).setZero();
            J.col(k).setZero();
            J(k, k) = 1.0;
            rhs(k) = 0.0;
          }
        }
        lu.compute(J.transpose());
        a = lu.solve(rhs);
        rcond[j] = lu.rcond();
        const double rn = rhs.norm();
        resid[j] = (J.transpose() * a - rhs).norm() / (rn > 0 ? rn : 1.0);
        if (!a.allFinite() || !(rcond[j] > 1e-14) || !(resid[j] < 1e-6)) bad[j] = 1;
        av.noalias() = Cv.transpose() * a;
        av -= gv;
        delta_e.col(j) = (-(av.array() / gg.array())).matrix().template cast<S>();
        a_I.col(j) = a.head(n_I).template cast<S>();
        a_D.col(j) = a.tail(n_D).template cast<S>();
      }
    }
  }
  for (int j = 0; j < B; ++j) {
    ++st.solves;
    if (bad[j]) ++st.failed;
    if (!(resid[j] <= st.worst_residual)) st.worst_residual = resid[j];
    st.worst_rcond = std::min(st.worst_rcond, rcond[j]);
  }
  if (st.failed > 0) {
    st.status = sim::SolverStatus::non_finite;
    std::ostringstream os;
    os << "adjoint solve failed for " << st.failed << "/" << B
       << " samples (smallest reciprocal condition " << st.worst_rcond
       << ", worst relative residual " << st.worst_residual
       << "); the equilibrium's Jacobian is singular";
    if (p.n_I > 1 || p.n_D > 1)
      os << " - identical integrating interneurons? give them leak (network.circuit.lambda_I / "
            "lambda_D > 0) or use n_I = n_D = 1";
    else
      os << " - a silent or saturated interneuron, or weights that have diverged (check the "
            "learning rates and network.init_gain)";
    throw numerical_error("implicit gradient", os.str());
  }
  frozen_feedback_grads(layer.w, c.z, delta_e, g);
  g.W_IE.noalias() = -S(p.k_I) * a_I * c.z.v.transpose();
  g.W_DE.noalias() = -S(p.k_D) * (a_D.cwiseProduct(c.z.r_D)) * c.z.v.cwiseAbs2().transpose();
}

// Exact backward pass of the feed-forward circuit's explicit equilibrium, given g_v. Writes the
// gradients of every inhibitory weight into g, dL/de into delta_e and adds the interneuron
// paths' contribution to dL/dx into dx (if non-null).
template <class S>
void exact_feedforward(const Layer<S>& layer, const LayerCache<S>& c, const Mat<S>& g_v,
                       Mat<S>& delta_e, LayerWeights<S>& g, Mat<S>* dx) {
  const auto& w = layer.w;
  const Mat<S> gain = shunting_gain(layer, c.z);
  delta_e = (g_v.array() / gain.array()).matrix();
  const Mat<S> d_rI = -(w.W_EI.transpose() * delta_e);                               // n_I x B
  const Mat<S> d_gain = -(g_v.cwiseProduct(c.z.v).array() / gain.array()).matrix();  // n_E x B
  const Mat<S> d_rD = w.W_ED.transpose() * d_gain;                                   // n_D x B
  const Mat<S> d_q = (d_rD.array() / (S(2) * c.z.r_D.array())).matrix();             // n_D x B
  const Mat<S> ux = w.U * c.x;
  const Mat<S> d_ux = (S(2) * ux.array() * (w.W_DE.transpose() * d_q).array()).matrix();
  g.W_EI.noalias() = -delta_e * c.z.r_I.transpose();
  g.W_ED.noalias() = d_gain * c.z.r_D.transpose();
  g.W_DE.noalias() = d_q * ux.cwiseAbs2().transpose();
  g.W_IX.noalias() = d_rI * c.x.transpose();
  g.U.noalias() = d_ux * c.x.transpose();
  if (dx) {
    dx->noalias() += w.W_IX.transpose() * d_rI;
    dx->noalias() += w.U.transpose() * d_ux;
  }
}

}  // namespace

template <class S>
void frozen_error(ErrorTransform t, const Layer<S>& layer, const sim::CircuitState<S>& z,
                  const Mat<S>& e, Mat<S> g_v, Mat<S>& delta_e) {
  switch (t) {
    case ErrorTransform::none:
      break;
    case ErrorTransform::lateral:
      g_v -= layer.w.L_back * (layer.w.L_pool * g_v);
      break;
    case ErrorTransform::scale: {
      // LayerNorm's division by the spread of the drive, sqrt(theta) / sd(e), in place of the
      // circuit's shunting gain (identical for the exactly normalising default circuit).
      const Mat<S> ec = e.rowwise() - e.colwise().mean();
      const Mat<S> sd = (ec.cwiseAbs2().colwise().mean().array() + S(1e-30)).sqrt().matrix();
      const S st = std::sqrt(S(layer.spec.circuit.theta));
      delta_e = (g_v.array().rowwise() * (st / sd.array().row(0))).matrix();
      return;
    }
    case ErrorTransform::center:
    case ErrorTransform::decorrelate:
    case ErrorTransform::full: {
      const Mat<S> vc = z.v.rowwise() - z.v.colwise().mean();
      const Mat<S> sd = (vc.cwiseAbs2().colwise().mean().array() + S(1e-30)).sqrt().matrix();
      const Mat<S> y = (vc.array().rowwise() / sd.array().row(0)).matrix();  // LayerNorm(v)
      const bool center = t != ErrorTransform::decorrelate;
      const bool decor = t != ErrorTransform::center;
      Mat<S> proj;
      if (decor) proj = y.cwiseProduct(g_v).colwise().mean();
      if (center) g_v = g_v.rowwise() - g_v.colwise().mean();
      if (decor) g_v -= (y.array().rowwise() * proj.array().row(0)).matrix();
      break;
    }
  }
  delta_e = (g_v.array() / shunting_gain(layer, z).array()).matrix();
}

template <class S>
void backward(const models::Network<S>& net, const ForwardCache<S>& cache, const Mat<S>& dlogits,
              const LearningSpec& spec, Gradients<S>& grads) {
  if (spec.rule == Rule::bptt)
    throw internal_error("backward(): the bptt rule runs through backward_bptt()");
  grads.zero_like(net, true);  // every layer's W_EX and b gradients are assigned below
  Mat<S> delta_r = dlogits;    // dL/d(output rates) of the current layer
  Mat<S> dphi, g_v, delta_e, dx;
  for (int l = int(net.layers.size()) - 1; l >= 0; --l) {
    const Layer<S>& layer = net.layers[l];
    const LayerCache<S>& c = cache.layers[l];
    LayerWeights<S>& g = grads.layers[l];
    models::phi_prime(layer.spec.phi, c.z.v, dphi);
    g_v = delta_r.cwiseProduct(dphi);
    // The error passed down: needed below the top layer, and at the input only if asked for.
    const bool need_dx = l > 0 || grads.input_gradient;
    bool dx_done = false;
    switch (layer.spec.kind) {
      case LayerKind::none:
        delta_e = g_v;
        g.W_EI.noalias() = -g_v * c.aux.transpose();
        {
          const Mat<S> d_inh = -(layer.w.W_EI.transpose() * g_v);
          g.W_IX.noalias() = d_inh * c.x.transpose();
          if (need_dx) {
            dx.noalias() = layer.w.W_EX.transpose() * delta_e;
            dx.noalias() += layer.w.W_IX.transpose() * d_inh;
          }
        }
        dx_done = true;
        break;
      case LayerKind::layernorm: {
        // v = sqrt(theta) y, y = (e - mean e) * inv_sd; exact LayerNorm backward.
        const S st = std::sqrt(S(layer.spec.circuit.theta));
        const Mat<S> y = (c.z.v / st);
        const Mat<S> gy = g_v * st;
        const Mat<S> proj = y.cwiseProduct(gy).colwise().mean();
        delta_e = gy.rowwise() - gy.colwise().mean();
        delta_e -= (y.array().rowwise() * proj.array().row(0)).matrix();
        delta_e = (delta_e.array().rowwise() * c.aux.array().row(0)).matrix();
        break;
      }
      case LayerKind::circuit: {
        const bool ff = layer.spec.circuit.drive == InhibitionDrive::feedforward;
        if (spec.rule == Rule::implicit) {
          if (ff) {
            if (need_dx) dx.setZero(c.x.rows(), c.x.cols());
            exact_feedforward(layer, c, g_v, delta_e, g, need_dx ? &dx : nullptr);
            if (need_dx) dx.noalias() += layer.w.W_EX.transpose() * delta_e;
            dx_done = true;
          } else {
            implicit_feedback(layer, c, g_v, spec.pooled_fast_path, delta_e, g, grads.adjoint);
          }
        } else {  // frozen: inhibition constant, error through the shunting gain only
          frozen_error(spec.error_transform, layer, c.z, c.e, g_v, delta_e);
          frozen_feedback_grads(layer.w, c.z, delta_e, g);
        }
        break;
      }
    }
    g.W_EX.noalias() = delta_e * c.x.transpose();
    g.b = delta_e.rowwise().sum();
    if (need_dx && !dx_done) dx.noalias() = layer.w.W_EX.transpose() * delta_e;
    if (l > 0)
      delta_r.swap(dx);
    else if (grads.input_gradient)
      grads.input.swap(dx);
    else
      grads.input.resize(0, 0);
  }
}

template <class S>
double local_homeostatic_gradients(const models::Network<S>& net, const ForwardCache<S>& cache,
                                   double weight, Gradients<S>& grads) {
  double loss = 0;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const Layer<S>& layer = net.layers[l];
    if (layer.spec.kind != LayerKind::circuit ||
        layer.spec.circuit.drive != InhibitionDrive::feedforward)
      continue;
    const LayerCache<S>& c = cache.layers[l];
    const int n = layer.spec.n_E, B = int(c.z.v.cols());
    const double theta = layer.spec.circuit.theta;
    const Mat<S> mu = c.z.v.colwise().mean();
    const Mat<S> vc = c.z.v.rowwise() - mu.row(0);
    const Mat<S> var = vc.cwiseAbs2().colwise().mean();
    for (int j = 0; j < B; ++j)
      loss += weight * (double(mu(0, j)) * mu(0, j) + std::pow(double(var(0, j)) - theta, 2)) / B;
    // d/dv_i = w/B [2 mu / n + 2 (var - theta) * 2 (v_i - mu) / n]
    const Mat<S> dvar = (var.array() - S(theta)).matrix();
    Mat<S> g_v = (vc.array().rowwise() * (S(4) * dvar.array().row(0))).matrix();
    g_v = (g_v.array().rowwise() + S(2) * mu.array().row(0)).matrix() * S(weight / (n * B));
    Mat<S> delta_e;
    models::LayerWeights<S> local = grads.layers[l];  // scratch; only W_IX and U are kept
    exact_feedforward<S>(layer, c, g_v, delta_e, local, nullptr);
    grads.layers[l].W_IX += local.W_IX;
    grads.layers[l].U += local.U;
  }
  return loss;
}

// ------------------------------------------------------------------------------------- bptt

namespace {

// Euler trajectory of one feedback circuit layer: states[0] is the initial state.
template <class S>
void euler_trajectory(const Layer<S>& layer, const Mat<S>& e, const Mat<S>& x, int steps, double dt,
                      std::vector<sim::CircuitState<S>>& states) {
  states.resize(steps + 1);
  sim::initial_state(layer, int(e.cols()), states[0]);
  sim::CircuitState<S> d;
  for (int t = 0; t < steps; ++t) {
    sim::circuit_rhs(layer, e, x, states[t], d);
    states[t + 1].v = states[t].v + S(dt) * d.v;
    states[t + 1].r_I = states[t].r_I + S(dt) * d.r_I;
    states[t + 1].r_D = states[t].r_D + S(dt) * d.r_D;
  }
}

// Vector-Jacobian product of one Euler step z' = z + dt f(z): given alpha = dL/dz', adds the
// parameter gradients into g and dL/de into delta_e, and returns dL/dz in alpha.
template <class S>
void euler_step_vjp(const Layer<S>& layer, const Mat<S>& e, const sim::CircuitState<S>& z,
                    double dt, sim::CircuitState<S>& alpha, Mat<S>& delta_e, LayerWeights<S>& g) {
  const auto& p = layer.spec.circuit;
  const auto& w = layer.w;
  const Mat<S> rIp = z.r_I.cwiseMax(S(0)), rDp = z.r_D.cwiseMax(S(0));
  Mat<S> gain = w.W_ED * rDp;
  gain.array() += S(p.sigma0);
  Mat<S> u = e;
  u.noalias() -= w.W_EI * rIp;
  const Mat<S> pv = alpha.v * S(dt / p.tau_E);
  const Mat<S> pv_g = (pv.array() / gain.array()).matrix();
  const Mat<S> d_gain = -(pv_g.array() * u.array() / gain.array()).matrix();
  delta_e += pv_g;
  g.W_EI.noalias() -= pv_g * rIp.transpose();
  g.W_ED.noalias() += d_gain * rDp.transpose();
  // Interneuron drives and clamp mask.
  Mat<S> fI = S(p.k_I) * (w.W_IE * z.v) - S(p.lambda_I) * z.r_I;
  const Mat<S> mask = (z.r_I.array() <= S(0) && fI.array() < S(0))
                          .select(S(0), Mat<S>::Ones(fI.rows(), fI.cols()).array())
                          .matrix();
  const Mat<S> qI = (alpha.r_I * S(dt / p.tau_I)).cwiseProduct(mask);
  const Mat<S> q = w.W_DE * z.v.cwiseAbs2();
  const Mat<S> qD = alpha.r_D * S(dt / p.tau_D);
  const Mat<S> wD = S(p.k_D) * z.r_D.cwiseProduct(qD);
  g.W_IE.noalias() += S(p.k_I) * qI * z.v.transpose();
  g.W_DE.noalias() += wD * z.v.cwiseAbs2().transpose();
  // dL/dz = alpha + dt J^T alpha
  Mat<S> av = alpha.v - pv;
  av.noalias() += S(p.k_I) * (w.W_IE.transpose() * qI);
  av += (S(2) * z.v.array() * (w.W_DE.transpose() * wD).array()).matrix();
  Mat<S> aI = alpha.r_I - S(p.lambda_I) * qI;
  aI -= ((w.W_EI.transpose() * pv_g).array() * (z.r_I.array() > S(0)).template cast<S>()).matrix();
  Mat<S> aD =
      alpha.r_D + qD.cwiseProduct(((S(p.k_D) * (q.array() - S(p.theta))) - S(p.lambda_D)).matrix());
  aD +=
      ((w.W_ED.transpose() * d_gain).array() * (z.r_D.array() > S(0)).template cast<S>()).matrix();
  alpha.v.swap(av);
  alpha.r_I.swap(aI);
  alpha.r_D.swap(aD);
}

}  // namespace

template <class S>
void backward_bptt(const models::Network<S>& net, const Mat<S>& x, const std::vector<int>& labels,
                   const LearningSpec& spec, Gradients<S>& grads, double* loss) {
  grads.zero_like(net);
  const int L = int(net.layers.size());
  std::vector<std::vector<sim::CircuitState<S>>> traj(L);
  ForwardCache<S> cache;
  cache.layers.resize(L);
  const Mat<S>* in = &x;
  for (int l = 0; l < L; ++l) {
    const Layer<S>& layer = net.layers[l];
    LayerCache<S>& c = cache.layers[l];
    c.x = *in;
    sim::excitatory_drive(layer.w, c.x, c.e);
    if (layer.spec.kind == LayerKind::circuit) {
      if (layer.spec.circuit.drive != InhibitionDrive::feedback)
        throw config_error(
            "learning.rule",
            "bptt supports feedback circuits only (network.circuit.drive = feedback)");
      euler_trajectory(layer, c.e, c.x, spec.bptt_steps, spec.bptt_dt, traj[l]);
      c.z = traj[l].back();
    } else if (layer.spec.kind == LayerKind::none) {
      c.aux.noalias() = layer.w.W_IX * c.x;
      c.z.v = c.e;
      c.z.v.noalias() -= layer.w.W_EI * c.aux;
    } else {
      throw config_error("learning.rule", "bptt does not support layernorm layers");
    }
    models::apply_phi(layer.spec.phi, c.z.v, c.r);
    in = &c.r;
  }
  Mat<S> dlogits;
  const double lv = cross_entropy(cache.logits(), labels, spec.label_smoothing, dlogits);
  if (loss) *loss = lv;
  Mat<S> delta_r = dlogits, dphi, delta_e, dx;
  for (int l = L - 1; l >= 0; --l) {
    const Layer<S>& layer = net.layers[l];
    const LayerCache<S>& c = cache.layers[l];
    LayerWeights<S>& g = grads.layers[l];
    models::phi_prime(layer.spec.phi, c.z.v, dphi);
    const Mat<S> g_v = delta_r.cwiseProduct(dphi);
    if (layer.spec.kind == LayerKind::none) {
      delta_e = g_v;
      g.W_EI.noalias() = -g_v * c.aux.transpose();
      const Mat<S> d_inh = -(layer.w.W_EI.transpose() * g_v);
      g.W_IX.noalias() = d_inh * c.x.transpose();
      dx.noalias() = layer.w.W_EX.transpose() * delta_e + layer.w.W_IX.transpose() * d_inh;
    } else {
      sim::CircuitState<S> alpha;
      alpha.v = g_v;
      alpha.r_I.setZero(layer.spec.circuit.n_I, g_v.cols());
      alpha.r_D.setZero(layer.spec.circuit.n_D, g_v.cols());
      delta_e.setZero(g_v.rows(), g_v.cols());
      for (int t = spec.bptt_steps - 1; t >= 0; --t)
        euler_step_vjp(layer, c.e, traj[l][t], spec.bptt_dt, alpha, delta_e, g);
      dx.noalias() = layer.w.W_EX.transpose() * delta_e;
    }
    g.W_EX.noalias() = delta_e * c.x.transpose();
    g.b = delta_e.rowwise().sum();
    if (l > 0)
      delta_r.swap(dx);
    else if (grads.input_gradient)
      grads.input.swap(dx);
    else
      grads.input.resize(0, 0);
  }
}

#define EISIM_INSTANTIATE(S)                                                                       \
  template struct Gradients<S>;                                                                    \
  template ForwardStats forward<S>(const models::Network<S>&, const Mat<S>&,                       \
                                   const sim::FixedPointParameters&, ForwardCache<S>&);            \
  template double cross_entropy<S>(const Mat<S>&, const std::vector<int>&, double, Mat<S>&, int*); \
  template void backward<S>(const models::Network<S>&, const ForwardCache<S>&, const Mat<S>&,      \
                            const LearningSpec&, Gradients<S>&);                                   \
  template double local_homeostatic_gradients<S>(const models::Network<S>&,                        \
                                                 const ForwardCache<S>&, double, Gradients<S>&);   \
  template void backward_bptt<S>(const models::Network<S>&, const Mat<S>&,                         \
                                 const std::vector<int>&, const LearningSpec&, Gradients<S>&,      \
                                 double*);                                                         \
  template void frozen_error<S>(ErrorTransform, const Layer<S>&, const sim::CircuitState<S>&,      \
                                const Mat<S>&, Mat<S>, Mat<S>&);
EISIM_INSTANTIATE(float)
EISIM_INSTANTIATE(double)
#undef EISIM_INSTANTIATE

}  // namespace eisim::learning
