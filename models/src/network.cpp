#include "eisim/models/network.hpp"

#include <cmath>
#include <limits>
#include <random>

#include "eisim/models/error.hpp"

namespace eisim::models {

const char* to_string(LayerKind kind) {
  switch (kind) {
    case LayerKind::circuit:
      return "circuit";
    case LayerKind::layernorm:
      return "layernorm";
    case LayerKind::none:
      return "none";
  }
  return "unknown";
}

bool is_dale_constrained(const std::string& name) {
  return name != "b" && name != "U";
}

ParamGroup group_of(const LayerSpec& spec, const std::string& name) {
  if (name == "W_EX" || name == "b") return ParamGroup::excitatory;
  if (name == "L_pool" || name == "L_back") return ParamGroup::fixed;
  // The readout's and plain layers' feed-forward inhibition learns with the inhibitory rate.
  (void)spec;
  return ParamGroup::inhibitory;
}

NetworkSpec make_network_spec(int n_in, int n_out, const std::vector<LayerSpec>& hidden,
                              double init_gain, int readout_inhibitory, int lateral_units) {
  if (n_in < 1 || n_out < 1) throw internal_error("make_network_spec: sizes must be positive");
  NetworkSpec spec;
  int prev = n_in;
  for (LayerSpec l : hidden) {
    l.n_in = prev;
    prev = l.n_E;
    spec.layers.push_back(l);
  }
  LayerSpec readout;
  readout.kind = LayerKind::none;
  readout.n_in = prev;
  readout.n_E = n_out;
  readout.n_I_plain = readout_inhibitory;
  readout.phi.kind = Nonlinearity::identity;
  spec.layers.push_back(readout);
  spec.init_gain = init_gain;
  spec.lateral_units = lateral_units;
  return spec;
}

namespace {

// Lognormal with the given mean and standard deviation.
double lognormal_sample(std::mt19937_64& rng, double mean, double sd) {
  const double s2 = std::log(1.0 + (sd * sd) / (mean * mean));
  std::normal_distribution<double> n(std::log(mean) - 0.5 * s2, std::sqrt(s2));
  return std::exp(n(rng));
}

template <class S>
Mat<S> lognormal_matrix(int rows, int cols, double mean, double sd, std::mt19937_64& rng) {
  Mat<S> m(rows, cols);
  for (int j = 0; j < cols; ++j)
    for (int i = 0; i < rows; ++i) m(i, j) = S(lognormal_sample(rng, mean, sd));
  return m;
}

// Positive weights with rows summing to `row_sum`: uniform if pooled, else lognormal(0, h).
template <class S>
Mat<S> pooling_matrix(int rows, int cols, double row_sum, bool heterogeneous, double h,
                      std::mt19937_64& rng) {
  Mat<S> m(rows, cols);
  if (!heterogeneous || h == 0.0) {
    m.setConstant(S(row_sum / cols));
    return m;
  }
  std::normal_distribution<double> n(0.0, h);
  for (int i = 0; i < rows; ++i) {
    for (int j = 0; j < cols; ++j) m(i, j) = S(std::exp(n(rng)));
    m.row(i) *= S(row_sum) / m.row(i).sum();
  }
  return m;
}

// Mean row of W_EX repeated n_I times: W_EX x - W_EI W_IX x is then centred at initialisation.
template <class S>
Mat<S> mean_rows(const Mat<S>& W, int n) {
  Mat<S> m(n, W.cols());
  const auto mean = W.colwise().mean();
  for (int i = 0; i < n; ++i) m.row(i) = mean;
  return m;
}

}  // namespace

template <class S>
Network<S> initialise(const NetworkSpec& spec, std::uint64_t seed) {
  Network<S> net;
  net.spec = spec;
  std::mt19937_64 rng(seed);
  for (const LayerSpec& ls : spec.layers) {
    if (ls.n_in < 1 || ls.n_E < 1) throw internal_error("initialise: layer sizes must be positive");
    Layer<S> layer;
    layer.spec = ls;
    LayerWeights<S>& w = layer.w;
    const double nE = ls.n_E, nin = ls.n_in;
    // science.md: lognormal, mean = std = sqrt(2 n_E / (n_in (n_E - 1))).
    const double scale = spec.init_gain * std::sqrt(2.0 * nE / (nin * std::max(nE - 1.0, 1.0)));
    w.W_EX = lognormal_matrix<S>(ls.n_E, ls.n_in, scale, scale, rng);
    w.b = Mat<S>::Zero(ls.n_E, 1);
    const CircuitParams& c = ls.circuit;
    const bool het = c.pooling == Pooling::heterogeneous;
    switch (ls.kind) {
      case LayerKind::circuit:
        w.W_EI = pooling_matrix<S>(ls.n_E, c.n_I, 1.0, het, c.heterogeneity, rng);
        w.W_ED = pooling_matrix<S>(ls.n_E, c.n_D, 1.0, het, c.heterogeneity, rng);
        if (c.drive == InhibitionDrive::feedback) {
          w.W_IE = pooling_matrix<S>(c.n_I, ls.n_E, 1.0, het, c.heterogeneity, rng);
          w.W_DE = pooling_matrix<S>(c.n_D, ls.n_E, 1.0, het, c.heterogeneity, rng);
        } else {
          // Reference study: every row of W_IX is the mean row of W_EX; U x reproduces the
          // centred drive, so mean((U x)^2) is its variance and the layer starts as LayerNorm.
          w.W_IX = mean_rows(w.W_EX, c.n_I);
          w.U = w.W_EX.rowwise() - w.W_EX.colwise().mean();
          w.W_DE = pooling_matrix<S>(c.n_D, ls.n_E, 1.0, het, c.heterogeneity, rng);
        }
        break;
      case LayerKind::none:
        w.W_IX = mean_rows(w.W_EX, ls.n_I_plain);
        w.W_EI = Mat<S>::Constant(ls.n_E, ls.n_I_plain, S(1.0 / ls.n_I_plain));
        break;
      case LayerKind::layernorm:
        break;
    }
    if (ls.kind != LayerKind::none || &ls != &spec.layers.back()) {
      // Fixed random positive lateral pooling of the error (frozen + lateral rule).
      const int nL = spec.lateral_units > 0 ? spec.lateral_units : std::max(1, ls.n_E / 10);
      std::uniform_real_distribution<double> u(0.05, 1.0);
      w.L_pool.resize(nL, ls.n_E);
      w.L_back.resize(ls.n_E, nL);
      for (int j = 0; j < ls.n_E; ++j)
        for (int i = 0; i < nL; ++i) w.L_pool(i, j) = S(u(rng));
      for (int j = 0; j < nL; ++j)
        for (int i = 0; i < ls.n_E; ++i) w.L_back(i, j) = S(u(rng));
      for (int i = 0; i < nL; ++i) w.L_pool.row(i) /= w.L_pool.row(i).sum();
      for (int i = 0; i < ls.n_E; ++i) w.L_back.row(i) /= w.L_back.row(i).sum();
    }
    net.layers.push_back(std::move(layer));
  }
  return net;
}

template <class To, class From>
Network<To> cast_network(const Network<From>& net) {
  Network<To> out;
  out.spec = net.spec;
  for (const auto& l : net.layers) {
    Layer<To> lt;
    lt.spec = l.spec;
    const auto cast = [](const Mat<From>& m) { return Mat<To>(m.template cast<To>()); };
    lt.w.W_EX = cast(l.w.W_EX);
    lt.w.b = cast(l.w.b);
    lt.w.W_EI = cast(l.w.W_EI);
    lt.w.W_ED = cast(l.w.W_ED);
    lt.w.W_IE = cast(l.w.W_IE);
    lt.w.W_DE = cast(l.w.W_DE);
    lt.w.W_IX = cast(l.w.W_IX);
    lt.w.U = cast(l.w.U);
    lt.w.L_pool = cast(l.w.L_pool);
    lt.w.L_back = cast(l.w.L_back);
    out.layers.push_back(std::move(lt));
  }
  return out;
}

template <class S>
double min_dale_weight(const Network<S>& net) {
  double m = std::numeric_limits<double>::infinity();
  for (const auto& l : net.layers)
    l.w.for_each([&](const std::string& name, const Mat<S>& w) {
      if (is_dale_constrained(name)) m = std::min(m, double(w.minCoeff()));
    });
  return m;
}

template <class S>
void clamp_dale(Network<S>& net) {
  for (auto& l : net.layers)
    l.w.for_each([&](const std::string& name, Mat<S>& w) {
      if (is_dale_constrained(name)) w = w.cwiseMax(S(0));
    });
}

template Network<float> initialise<float>(const NetworkSpec&, std::uint64_t);
template Network<double> initialise<double>(const NetworkSpec&, std::uint64_t);
template Network<float> cast_network<float, double>(const Network<double>&);
template Network<double> cast_network<double, float>(const Network<float>&);
template Network<float> cast_network<float, float>(const Network<float>&);
template Network<double> cast_network<double, double>(const Network<double>&);
template double min_dale_weight(const Network<float>&);
template double min_dale_weight(const Network<double>&);
template void clamp_dale(Network<float>&);
template void clamp_dale(Network<double>&);

}  // namespace eisim::models
