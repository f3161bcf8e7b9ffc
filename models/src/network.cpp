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

int LayerSpec::weight_index(const std::string& name) const {
  for (std::size_t k = 0; k < weights.size(); ++k)
    if (weights[k].name == name) return int(k);
  return -1;
}

namespace {

WeightInfo info(const std::string& name, int rows, int cols, Learns learns, bool dale,
                bool excitatory = false) {
  WeightInfo w;
  w.name = name;
  w.rows = rows;
  w.cols = cols;
  w.learns = learns;
  w.dale = dale;
  w.excitatory = excitatory;
  return w;
}

}  // namespace

void finalise(LayerSpec& spec) {
  if (spec.n_in < 1 || spec.n_E < 1) throw internal_error("finalise: layer sizes must be positive");
  spec.weights.clear();
  spec.projection_weight.clear();
  spec.energy_weight.clear();
  auto& W = spec.weights;
  W.push_back(info("W_EX", spec.n_E, spec.n_in, Learns::task, true, true));
  W.back().decay = true;
  W.push_back(info("b", spec.n_E, 1, Learns::task, false, true));
  switch (spec.kind) {
    case LayerKind::circuit: {
      auto& c = spec.circuit;
      if (c.populations.empty()) throw internal_error("finalise: circuit without populations");
      c.populations.front().size = spec.n_E;
      if (c.own_output_rate)
        spec.phi = c.populations.front().phi;  // the circuit's own E rate function
      else
        c.populations.front().phi = spec.phi;
      resolve(c);
      for (std::size_t k = 0; k < c.projections.size(); ++k) {
        const Projection& p = c.projections[k];
        const int rows = c.populations[p.tgt].size;
        int cols = p.src >= 0 ? c.populations[p.src].size : spec.n_in;
        if (p.signal == Signal::input_energy) {
          // U (n_E x n_in, signed) comes first: it is initialised from W_EX without randomness.
          spec.energy_weight.push_back(int(W.size()));
          W.push_back(info(p.energy_name, spec.n_E, spec.n_in, p.energy_learns, false));
          W.back().projection = int(k);
          W.back().energy = true;
          cols = spec.n_E;
        } else {
          spec.energy_weight.push_back(-1);
        }
        spec.projection_weight.push_back(int(W.size()));
        W.push_back(info(p.name, rows, cols, p.learns, true));
        W.back().projection = int(k);
      }
      break;
    }
    case LayerKind::none:
      W.push_back(info("W_EI", spec.n_E, spec.n_I_plain, Learns::task, true));
      W.push_back(info("W_IX", spec.n_I_plain, spec.n_in, Learns::task, true));
      break;
    case LayerKind::layernorm:
      break;
  }
  if (spec.lateral_units > 0) {
    W.push_back(info("L_pool", spec.lateral_units, spec.n_E, Learns::fixed, true));
    W.push_back(info("L_back", spec.n_E, spec.lateral_units, Learns::fixed, true));
  }
}

NetworkSpec make_network_spec(int n_in, int n_out, const std::vector<LayerSpec>& hidden,
                              double init_gain, int readout_inhibitory) {
  if (n_in < 1 || n_out < 1) throw internal_error("make_network_spec: sizes must be positive");
  NetworkSpec spec;
  int prev = n_in;
  for (LayerSpec l : hidden) {
    l.n_in = prev;
    finalise(l);
    prev = l.n_E;
    spec.layers.push_back(l);
  }
  LayerSpec readout;
  readout.kind = LayerKind::none;
  readout.n_in = prev;
  readout.n_E = n_out;
  readout.n_I_plain = readout_inhibitory;
  readout.phi.kind = Nonlinearity::identity;
  finalise(readout);
  spec.layers.push_back(readout);
  spec.init_gain = init_gain;
  return spec;
}

template <class S>
const std::string& LayerWeights<S>::name(int k) const {
  static const std::string wex = "W_EX", b = "b";
  return k == 0 ? wex : k == 1 ? b : names[k - 2];
}

template <class S>
bool LayerWeights<S>::has(const std::string& n) const {
  for (int k = 0; k < count(); ++k)
    if (name(k) == n) return true;
  return false;
}

template <class S>
Mat<S>& LayerWeights<S>::operator[](const std::string& n) {
  for (int k = 0; k < count(); ++k)
    if (name(k) == n) return at(k);
  throw internal_error("the layer has no weight named " + n);
}

template <class S>
const Mat<S>& LayerWeights<S>::operator[](const std::string& n) const {
  return const_cast<LayerWeights<S>&>(*this)[n];
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

// Mean row of W repeated n times (times scale).
template <class S>
Mat<S> mean_rows(const Mat<S>& W, int n, double scale) {
  Mat<S> m(n, W.cols());
  const auto mean = W.colwise().mean();
  for (int i = 0; i < n; ++i) m.row(i) = S(scale) * mean;
  return m;
}

template <class S>
Mat<S> projection_matrix(const Projection& p, int rows, int cols, const Mat<S>& W_EX,
                         std::mt19937_64& rng) {
  switch (p.init) {
    case Init::pooled:
      return pooling_matrix<S>(rows, cols, p.scale, false, 0.0, rng);
    case Init::heterogeneous:
      return pooling_matrix<S>(rows, cols, p.scale, true, p.heterogeneity, rng);
    case Init::lognormal: {
      if (p.scale == 0.0) return Mat<S>::Zero(rows, cols);
      const double m = p.scale / cols;
      return lognormal_matrix<S>(rows, cols, m, m, rng);
    }
    case Init::constant:
      return Mat<S>::Constant(rows, cols, S(p.scale));
    case Init::mean_drive:
      return mean_rows(W_EX, rows, p.scale);
  }
  throw internal_error("projection_matrix: unknown init");
}

}  // namespace

template <class S>
Network<S> initialise(const NetworkSpec& spec, std::uint64_t seed) {
  Network<S> net;
  net.spec = spec;
  std::mt19937_64 rng(seed);
  for (const LayerSpec& ls : spec.layers) {
    if (ls.n_in < 1 || ls.n_E < 1) throw internal_error("initialise: layer sizes must be positive");
    if (ls.weights.size() < 2) throw internal_error("initialise: layer spec not finalised");
    Layer<S> layer;
    layer.spec = ls;
    LayerWeights<S>& w = layer.w;
    const double nE = ls.n_E, nin = ls.n_in;
    // science.md: lognormal, mean = std = sqrt(2 n_E / (n_in (n_E - 1))).
    const double scale = spec.init_gain * std::sqrt(2.0 * nE / (nin * std::max(nE - 1.0, 1.0)));
    w.W_EX = lognormal_matrix<S>(ls.n_E, ls.n_in, scale, scale, rng);
    w.b = Mat<S>::Zero(ls.n_E, 1);
    for (std::size_t k = 2; k < ls.weights.size(); ++k) {
      const WeightInfo& wi = ls.weights[k];
      w.names.push_back(wi.name);
      Mat<S> m;
      if (wi.name == "L_pool" || wi.name == "L_back") {
        m.resize(wi.rows, wi.cols);  // filled below, in the order of the original code
      } else if (ls.kind == LayerKind::none) {
        // Output starts centred: rows of W_IX are the mean row of W_EX, rows of W_EI sum to 1.
        m = wi.name == "W_IX" ? mean_rows(w.W_EX, wi.rows, 1.0)
                              : Mat<S>::Constant(wi.rows, wi.cols, S(1.0 / wi.cols));
      } else if (wi.energy) {
        // (U x)^2 is the squared centred drive: the layer starts as LayerNorm of W_EX x.
        m = w.W_EX.rowwise() - w.W_EX.colwise().mean();
      } else {
        m = projection_matrix<S>(ls.circuit.projections[wi.projection], wi.rows, wi.cols, w.W_EX,
                                 rng);
      }
      w.other.push_back(std::move(m));
    }
    if (ls.lateral_units > 0) {
      // Fixed random positive lateral pooling of the error (frozen + lateral rule).
      Mat<S>& L_pool = w["L_pool"];
      Mat<S>& L_back = w["L_back"];
      const int nL = ls.lateral_units;
      std::uniform_real_distribution<double> u(0.05, 1.0);
      for (int j = 0; j < ls.n_E; ++j)
        for (int i = 0; i < nL; ++i) L_pool(i, j) = S(u(rng));
      for (int j = 0; j < nL; ++j)
        for (int i = 0; i < ls.n_E; ++i) L_back(i, j) = S(u(rng));
      for (int i = 0; i < nL; ++i) L_pool.row(i) /= L_pool.row(i).sum();
      for (int i = 0; i < ls.n_E; ++i) L_back.row(i) /= L_back.row(i).sum();
    }
    net.layers.push_back(std::move(layer));
  }
  return net;
}

template <class To, class From>
Layer<To> cast_layer(const Layer<From>& l) {
  Layer<To> lt;
  lt.spec = l.spec;
  lt.w.W_EX = l.w.W_EX.template cast<To>();
  lt.w.b = l.w.b.template cast<To>();
  lt.w.names = l.w.names;
  for (const auto& m : l.w.other) lt.w.other.push_back(m.template cast<To>());
  return lt;
}

template <class To, class From>
Network<To> cast_network(const Network<From>& net) {
  Network<To> out;
  out.spec = net.spec;
  for (const auto& l : net.layers) out.layers.push_back(cast_layer<To>(l));
  return out;
}

template <class S>
double min_dale_weight(const Network<S>& net) {
  double m = std::numeric_limits<double>::infinity();
  for (const auto& l : net.layers)
    for (int k = 0; k < l.w.count(); ++k)
      if (l.spec.weights[k].dale && l.w.at(k).size() > 0)
        m = std::min(m, double(l.w.at(k).minCoeff()));
  return m;
}

template <class S>
void clamp_dale(Network<S>& net) {
  for (auto& l : net.layers)
    for (int k = 0; k < l.w.count(); ++k)
      if (l.spec.weights[k].dale) l.w.at(k) = l.w.at(k).cwiseMax(S(0));
}

template struct LayerWeights<float>;
template struct LayerWeights<double>;
template Network<float> initialise<float>(const NetworkSpec&, std::uint64_t);
template Network<double> initialise<double>(const NetworkSpec&, std::uint64_t);
template Network<float> cast_network<float, double>(const Network<double>&);
template Network<double> cast_network<double, float>(const Network<float>&);
template Network<float> cast_network<float, float>(const Network<float>&);
template Network<double> cast_network<double, double>(const Network<double>&);
template Layer<double> cast_layer<double, float>(const Layer<float>&);
template Layer<double> cast_layer<double, double>(const Layer<double>&);
template Layer<float> cast_layer<float, double>(const Layer<double>&);
template double min_dale_weight(const Network<float>&);
template double min_dale_weight(const Network<double>&);
template void clamp_dale(Network<float>&);
template void clamp_dale(Network<double>&);

}  // namespace eisim::models
