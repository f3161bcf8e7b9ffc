// The learning rules' backward passes. Derivations: docs/concepts.md, "Learning rules".
#include "eisim/learning/gradients.hpp"

#include <cmath>
#include <limits>
#include <sstream>

#include "eisim/models/error.hpp"
#include "eisim/models/nonlinearity.hpp"
#include "eisim/sim/circuit.hpp"

namespace eisim::learning {

using models::Layer;
using models::LayerWeights;

bool is_trained(const models::LayerSpec& spec, int k, bool train_inhibitory) {
  const models::WeightInfo& w = spec.weights[k];
  if (w.learns == models::Learns::fixed) return false;
  return w.excitatory || train_inhibitory;
}

bool solves_adjoint(const models::NetworkSpec& net, const LearningSpec& spec) {
  if (spec.rule == Rule::implicit) return true;
  if (!spec.train_inhibitory) return false;
  for (const auto& layer : net.layers)
    if (layer.kind == models::LayerKind::circuit)
      for (const auto& w : layer.weights)
        if (w.learns == models::Learns::local) return true;
  return false;
}

template <class S>
void Gradients<S>::zero_like(const models::Network<S>& net, bool keep_overwritten) {
  layers.resize(net.layers.size());
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    auto& g = layers[l];
    const auto& w = net.layers[l].w;
    if (keep_overwritten) {
      g.W_EX.resize(w.W_EX.rows(), w.W_EX.cols());
      g.b.resize(w.b.rows(), w.b.cols());
    } else {
      g.W_EX.setZero(w.W_EX.rows(), w.W_EX.cols());
      g.b.setZero(w.b.rows(), w.b.cols());
    }
    g.names = w.names;
    g.other.resize(w.other.size());
    for (std::size_t k = 0; k < w.other.size(); ++k)
      g.other[k].setZero(w.other[k].rows(), w.other[k].cols());
  }
  adjoint = sim::AdjointStats{};
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

template <class S>
Mat<S> transform_error(ErrorTransform t, const Layer<S>& layer, const Mat<S>& v, Mat<S> g_v) {
  switch (t) {
    case ErrorTransform::none:
    case ErrorTransform::scale:
      break;
    case ErrorTransform::lateral:
      g_v -= layer.w["L_back"] * (layer.w["L_pool"] * g_v);
      break;
    case ErrorTransform::center:
    case ErrorTransform::decorrelate:
    case ErrorTransform::full: {
      const Mat<S> vc = v.rowwise() - v.colwise().mean();
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
  return g_v;
}

namespace {

// What one layer's backward pass needs besides its cache.
struct Context {
  const LearningSpec& spec;
  bool need_dx;  // the error passed down is needed
  sim::AdjointStats& adjoint;
};

// Each overload writes dL/de into delta_e, the gradients of the layer's own weights (not W_EX
// and b) into g, and the part of dL/dx that does not pass through W_EX into dx (sized n_in x B,
// or left empty when it has none).

template <class S>
void backward_layer(models::PlainKind, const Layer<S>& layer, const sim::LayerCache<S>& c,
                    const Mat<S>& g_v, Context& ctx, LayerWeights<S>& g, Mat<S>& delta_e,
                    Mat<S>& dx) {
  delta_e = g_v;
  g["W_EI"].noalias() = -g_v * c.aux.transpose();
  const Mat<S> d_inh = -(layer.w["W_EI"].transpose() * g_v);
  g["W_IX"].noalias() = d_inh * c.x().transpose();
  if (ctx.need_dx) dx.noalias() = layer.w["W_IX"].transpose() * d_inh;
}

template <class S>
void backward_layer(models::LayerNormKind, const Layer<S>& layer, const sim::LayerCache<S>& c,
                    const Mat<S>& g_v, Context&, LayerWeights<S>&, Mat<S>& delta_e, Mat<S>& dx) {
  // v = sqrt(theta) y, y = (e - mean e) * inv_sd; exact LayerNorm backward.
  const S st = std::sqrt(S(layer.spec.theta));
  const Mat<S> y = (c.z.v() / st);
  const Mat<S> gy = g_v * st;
  const Mat<S> proj = y.cwiseProduct(gy).colwise().mean();
  delta_e = gy.rowwise() - gy.colwise().mean();
  delta_e -= (y.array().rowwise() * proj.array().row(0)).matrix();
  delta_e = (delta_e.array().rowwise() * c.aux.array().row(0)).matrix();
  dx.resize(0, 0);
}

[[noreturn]] void adjoint_failed(const models::LayerSpec& spec, const sim::AdjointStats& st,
                                 int B) {
  std::ostringstream os;
  os << "adjoint solve failed for " << st.failed << "/" << B
     << " samples (smallest reciprocal condition " << st.worst_rcond << ", worst relative residual "
     << st.worst_residual << "); the equilibrium's Jacobian is singular";
  // Several units of an integrating population without leak (the homeostatic classes of the
  // default circuit) over-constrain or duplicate each other.
  bool many = false;
  for (std::size_t p = 1; p < spec.circuit.populations.size(); ++p) {
    const auto& P = spec.circuit.populations[p];
    many = many || (P.size > 1 && P.dynamics != models::Dynamics::leaky && P.leak == 0);
  }
  if (many && (spec.circuit.preset == "default" || spec.circuit.preset == "inorm"))
    os << " - identical integrating interneurons? give them leak (network.circuit.lambda_I / "
          "lambda_D > 0) or use n_I = n_D = 1";
  else if (many)
    os << " - integrating interneurons without leak: give them leak "
          "(network.circuit.populations.<name>.leak > 0)";
  else
    os << " - a silent or saturated interneuron, or weights that have diverged (check the "
          "learning rates and network.init_gain)";
  throw numerical_error("implicit gradient", os.str());
}

// Cotangents w of a circuit at its equilibrium for the rule, then every gradient by one
// vector-Jacobian product of the circuit's equations.
template <class S>
void circuit_gradients(const Layer<S>& layer, const sim::CircuitInput<S>& in,
                       const sim::CircuitState<S>& z, const sim::Linearisation* saved,
                       const Mat<S>& g_v, Rule rule, ErrorTransform transform,
                       bool pooled_fast_path, bool need_dx, sim::AdjointStats& stats,
                       LayerWeights<S>& g, Mat<S>& delta_e, Mat<S>& dx) {
  // Only what the vector-Jacobian product below reads: partials of the populations that get a
  // cotangent (E alone under the frozen rule), signal derivatives only for the back-substitution
  // of explicit populations.
  thread_local sim::CircuitTerms<S> t;  // buffers reused from batch to batch
  sim::EvalNeeds needs;
  needs.partials = true;
  const bool frozen = rule != Rule::implicit;
  needs.dsignal = !frozen && !models::analyse(layer.spec.circuit).explicit_order.empty();
  needs.local = needs.dsignal;  // F is never read, dF_dz only by the back-substitution's vjp
  if (frozen) {
    needs.targets.assign(layer.spec.circuit.populations.size(), 0);
    needs.targets[0] = 1;
  }
  sim::evaluate(layer, in, z, t, needs);
  std::vector<Mat<S>> w;
  sim::AdjointParameters ap;
  ap.pooled_fast_path = pooled_fast_path;
  ap.saved = saved;
  if (rule == Rule::implicit) {
    const sim::AdjointStats st = sim::solve_adjoint(layer, in, z, t, g_v, ap, w);
    stats.add(st);
    if (!st.ok()) adjoint_failed(layer.spec, st, int(g_v.cols()));
  } else if (transform == ErrorTransform::scale) {
    // LayerNorm's division by the spread of the drive, sqrt(theta) / sd(e), in place of the
    // circuit's conductance (identical for the exactly normalising default circuit).
    const Mat<S>& e = in.ext[0];
    const Mat<S> ec = e.rowwise() - e.colwise().mean();
    const Mat<S> sd = (ec.cwiseAbs2().colwise().mean().array() + S(1e-30)).sqrt().matrix();
    const S st = std::sqrt(S(layer.spec.theta));
    w.assign(1, (g_v.array().rowwise() * (st / sd.array().row(0)) / t.dF_dq[0].array()).matrix());
  } else {
    ap.through_inhibition = false;
    const sim::AdjointStats st =
        sim::solve_adjoint(layer, in, z, t, transform_error(transform, layer, z.v(), g_v), ap, w);
    stats.add(st);
    if (!st.ok()) adjoint_failed(layer.spec, st, int(g_v.cols()));
    w.resize(1);  // inhibition held constant: no cotangent on the interneurons
  }
  std::vector<Mat<S>> dext;
  bool input_projections = false;
  for (const auto& pr : layer.spec.circuit.projections) input_projections |= pr.src < 0;
  const bool dx_here = need_dx && input_projections;
  if (dx_here) dx.setZero(in.x.rows(), in.x.cols());
  sim::vjp(layer, in, t, w, &g, static_cast<std::vector<Mat<S>>*>(nullptr), &dext,
           dx_here ? &dx : static_cast<Mat<S>*>(nullptr));
  delta_e.swap(dext[0]);
}

template <class S>
void backward_layer(models::CircuitKind, const Layer<S>& layer, const sim::LayerCache<S>& c,
                    const Mat<S>& g_v, Context& ctx, LayerWeights<S>& g, Mat<S>& delta_e,
                    Mat<S>& dx) {
  circuit_gradients(layer, c.in, c.z, &c.lin, g_v, ctx.spec.rule, ctx.spec.error_transform,
                    ctx.spec.pooled_fast_path, ctx.need_dx, ctx.adjoint, g, delta_e, dx);
}

// dL/dW_EX, dL/db and the error passed down, from dL/de.
template <class S>
void finish_layer(const Layer<S>& layer, const Mat<S>& x, const Mat<S>& delta_e, bool need_dx,
                  LayerWeights<S>& g, Mat<S>& dx) {
  g.W_EX.noalias() = delta_e * x.transpose();
  g.b = delta_e.rowwise().sum();
  if (!need_dx) return;
  if (dx.size() == 0)
    dx.noalias() = layer.w.W_EX.transpose() * delta_e;
  else
    dx.noalias() += layer.w.W_EX.transpose() * delta_e;
}

}  // namespace

template <class S>
void backward(const models::Network<S>& net, const sim::ForwardCache<S>& cache,
              const Mat<S>& dlogits, const LearningSpec& spec, Gradients<S>& grads) {
  if (spec.rule == Rule::bptt)
    throw internal_error("backward(): the bptt rule runs through backward_bptt()");
  grads.zero_like(net, true);  // every layer's W_EX and b gradients are assigned below
  Mat<S> delta_r = dlogits;    // dL/d(output rates) of the current layer
  Mat<S> dphi, g_v, delta_e, dx;
  for (int l = int(net.layers.size()) - 1; l >= 0; --l) {
    const Layer<S>& layer = net.layers[l];
    const sim::LayerCache<S>& c = cache.layers[l];
    models::phi_prime(layer.spec.phi, c.z.v(), dphi);
    g_v = delta_r.cwiseProduct(dphi);
    // The error passed down: needed below the top layer, and at the input only if asked for.
    Context ctx{spec, l > 0 || grads.input_gradient, grads.adjoint};
    dx.resize(0, 0);
    models::visit(layer.spec.kind, [&](auto kind) {
      backward_layer(kind, layer, c, g_v, ctx, grads.layers[l], delta_e, dx);
    });
    finish_layer(layer, c.x(), delta_e, ctx.need_dx, grads.layers[l], dx);
    if (l > 0)
      delta_r.swap(dx);
    else if (grads.input_gradient)
      grads.input.swap(dx);
    else
      grads.input.resize(0, 0);
  }
}

template <class S>
double local_homeostatic_gradients(const models::Network<S>& net, const sim::ForwardCache<S>& cache,
                                   double weight, Gradients<S>& grads) {
  double loss = 0;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const Layer<S>& layer = net.layers[l];
    if (layer.spec.kind != models::LayerKind::circuit) continue;
    bool local = false;
    for (const auto& wi : layer.spec.weights) local = local || wi.learns == models::Learns::local;
    if (!local) continue;
    const sim::LayerCache<S>& c = cache.layers[l];
    const Mat<S>& v = c.z.v();
    const int n = layer.spec.n_E, B = int(v.cols());
    const double theta = layer.spec.theta;
    const Mat<S> mu = v.colwise().mean();
    const Mat<S> vc = v.rowwise() - mu.row(0);
    const Mat<S> var = vc.cwiseAbs2().colwise().mean();
    for (int j = 0; j < B; ++j)
      loss += weight * (double(mu(0, j)) * mu(0, j) + std::pow(double(var(0, j)) - theta, 2)) / B;
    // d/dv_i = w/B [2 mu / n + 2 (var - theta) * 2 (v_i - mu) / n]
    const Mat<S> dvar = (var.array() - S(theta)).matrix();
    Mat<S> g_v = (vc.array().rowwise() * (S(4) * dvar.array().row(0))).matrix();
    g_v = (g_v.array().rowwise() + S(2) * mu.array().row(0)).matrix() * S(weight / (n * B));
    LayerWeights<S> local_g;
    local_g.zero_like(layer.w);
    Mat<S> delta_e, dx;
    sim::AdjointStats st;
    circuit_gradients(layer, c.in, c.z, &c.lin, g_v, Rule::implicit, ErrorTransform::none, true,
                      false, st, local_g, delta_e, dx);
    for (std::size_t k = 2; k < layer.spec.weights.size(); ++k)
      if (layer.spec.weights[k].learns == models::Learns::local)
        grads.layers[l].at(int(k)) += local_g.at(int(k));
  }
  return loss;
}

// ------------------------------------------------------------------------------------- bptt

template <class S>
void backward_bptt(const models::Network<S>& net, const Mat<S>& x, const std::vector<int>& labels,
                   const LearningSpec& spec, Gradients<S>& grads, double* loss) {
  grads.zero_like(net);
  const int L = int(net.layers.size());
  std::vector<std::vector<sim::CircuitState<S>>> traj(L);
  sim::ForwardCache<S> cache;
  cache.layers.resize(L);
  const S dt = S(spec.bptt_dt);
  for (int l = 0; l < L; ++l) {
    const Layer<S>& layer = net.layers[l];
    sim::LayerCache<S>& c = cache.layers[l];
    const Mat<S>& in = l == 0 ? x : cache.layers[l - 1].r;
    if (layer.spec.kind != models::LayerKind::circuit) {
      sim::forward_layer(layer, in, sim::FixedPointParameters{}, c);
      continue;
    }
    // Euler trajectory from the solvers' initial state: traj[l][0] is the initial state.
    sim::circuit_input(layer, in, c.in);
    auto& states = traj[l];
    states.resize(spec.bptt_steps + 1);
    sim::initial_state(layer, int(in.cols()), states[0]);
    sim::CircuitState<S> d;
    for (int t = 0; t < spec.bptt_steps; ++t) {
      sim::circuit_rhs(layer, c.in, states[t], d);
      states[t + 1].z.resize(d.z.size());
      for (std::size_t p = 0; p < d.z.size(); ++p)
        states[t + 1].z[p] = states[t].z[p] + dt * d.z[p];
    }
    c.z = states.back();
    models::apply_phi(layer.spec.phi, c.z.v(), c.r);
  }
  Mat<S> dlogits;
  const double lv = cross_entropy(cache.logits(), labels, spec.label_smoothing, dlogits);
  if (loss) *loss = lv;
  Mat<S> delta_r = dlogits, dphi, delta_e, dx;
  for (int l = L - 1; l >= 0; --l) {
    const Layer<S>& layer = net.layers[l];
    const sim::LayerCache<S>& c = cache.layers[l];
    LayerWeights<S>& g = grads.layers[l];
    models::phi_prime(layer.spec.phi, c.z.v(), dphi);
    const Mat<S> g_v = delta_r.cwiseProduct(dphi);
    const bool need_dx = l > 0 || grads.input_gradient;
    dx.resize(0, 0);
    if (layer.spec.kind != models::LayerKind::circuit) {
      Context ctx{spec, need_dx, grads.adjoint};
      models::visit(layer.spec.kind, [&](auto kind) {
        if constexpr (!std::is_same_v<decltype(kind), models::CircuitKind>)
          backward_layer(kind, layer, c, g_v, ctx, g, delta_e, dx);
      });
    } else {
      // Back through every Euler step z' = z + dt F(z) / tau: alpha = dL/dz'.
      const auto& pops = layer.spec.circuit.populations;
      std::vector<Mat<S>> alpha(pops.size()), w(pops.size()), dz, dext;
      for (std::size_t p = 0; p < pops.size(); ++p) alpha[p].setZero(pops[p].size, g_v.cols());
      alpha[0] = g_v;
      delta_e.setZero(g_v.rows(), g_v.cols());
      if (need_dx) dx.setZero(x.rows() * 0 + c.x().rows(), c.x().cols());
      sim::CircuitTerms<S> t;
      for (int step = spec.bptt_steps - 1; step >= 0; --step) {
        sim::evaluate(layer, c.in, traj[l][step], t, true);
        for (std::size_t p = 0; p < pops.size(); ++p) w[p] = alpha[p] * (dt / S(pops[p].tau));
        dz.assign(pops.size(), Mat<S>());
        sim::vjp(layer, c.in, t, w, &g, &dz, &dext, need_dx ? &dx : static_cast<Mat<S>*>(nullptr));
        delta_e += dext[0];
        for (std::size_t p = 0; p < pops.size(); ++p)
          if (dz[p].size() > 0) alpha[p] += dz[p];
      }
    }
    finish_layer(layer, c.x(), delta_e, need_dx, g, dx);
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
  template double cross_entropy<S>(const Mat<S>&, const std::vector<int>&, double, Mat<S>&, int*); \
  template void backward<S>(const models::Network<S>&, const sim::ForwardCache<S>&, const Mat<S>&, \
                            const LearningSpec&, Gradients<S>&);                                   \
  template double local_homeostatic_gradients<S>(                                                  \
      const models::Network<S>&, const sim::ForwardCache<S>&, double, Gradients<S>&);              \
  template void backward_bptt<S>(const models::Network<S>&, const Mat<S>&,                         \
                                 const std::vector<int>&, const LearningSpec&, Gradients<S>&,      \
                                 double*);                                                         \
  template Mat<S> transform_error<S>(ErrorTransform, const Layer<S>&, const Mat<S>&, Mat<S>);
EISIM_INSTANTIATE(float)
EISIM_INSTANTIATE(double)
#undef EISIM_INSTANTIATE

}  // namespace eisim::learning
