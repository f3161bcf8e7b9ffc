// eisim simulate: the equilibrium and the ODE trajectory of every population of every layer, and
// the stimulus protocol (simulate.protocol) if one is set.
// Depends on sim/ only (no learning code): the forward pass is sim::forward_layer.
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

#include "eisim/experiments/commands.hpp"
#include "eisim/io/output.hpp"
#include "eisim/io/provenance.hpp"
#include "eisim/models/error.hpp"
#include "eisim/sim/circuit.hpp"
#include "eisim/sim/forward.hpp"
#include "eisim/sim/protocol.hpp"
#include "eisim/sim/solver.hpp"
#include "progress.hpp"
#include "simulation.hpp"

namespace eisim::experiments {

namespace {

std::vector<std::string> statuses(const sim::SolveResult& r) {
  std::vector<std::string> out;
  for (auto s : r.sample_status) out.push_back(sim::to_string(s));
  return out;
}

// (T, N, n) tensor from per-time (n x N) snapshots.
std::vector<float> stack(const std::vector<Mat<double>>& snaps) {
  std::vector<float> out;
  for (const auto& m : snaps)
    for (int j = 0; j < m.cols(); ++j)
      for (int i = 0; i < m.rows(); ++i) out.push_back(float(m(i, j)));
  return out;
}

Mat<double> rates(const models::Population& p, const Mat<double>& z) {
  Mat<double> r;
  sim::population_rate<Mat<double>, Mat<double>>(p, z, r, nullptr);
  return r;
}

// The populations of a circuit layer, in the circuit's order (E first), their equilibria and
// their trajectories. Every population's name becomes an HDF5 group name.
void write_populations(io::H5File& f, const std::string& g, const models::LayerSpec& spec,
                       const sim::CircuitState<double>& eq,
                       const std::vector<sim::CircuitState<double>>& traces,
                       const sim::CircuitState<double>& end) {
  const auto& pops = spec.circuit.populations;
  std::string names;
  for (const auto& p : pops) names += (names.empty() ? "" : ",") + p.name;
  f.set_attr(g, "populations", names);
  f.set_attr(g, "preset", spec.circuit.preset);
  const std::size_t T = traces.size();
  for (std::size_t k = 0; k < pops.size(); ++k) {
    const auto& p = pops[k];
    const std::string pg = g + "/populations/" + p.name;
    const int N = int(eq.z[k].cols());
    f.write(pg + "/eq", Mat<double>(eq.z[k].transpose()));
    f.write(pg + "/rate_eq", Mat<double>(rates(p, eq.z[k]).transpose()));
    std::vector<Mat<double>> zt, rt;
    zt.reserve(T);
    rt.reserve(T);
    for (const auto& s : traces) {
      zt.push_back(s.z[k]);
      rt.push_back(rates(p, s.z[k]));
    }
    const std::vector<std::size_t> dims{T, std::size_t(N), std::size_t(p.size)};
    f.write_tensor(pg + "/trace", stack(zt), dims);
    f.write_tensor(pg + "/rate", stack(rt), dims);
    f.write_scalar(pg + "/ode_fp_max_abs_diff",
                   end.z[k].size() ? (end.z[k] - eq.z[k]).cwiseAbs().maxCoeff() : 0.0);
    f.set_attr(pg, "index", std::int64_t(k));
    f.set_attr(pg, "size", std::int64_t(p.size));
    f.set_attr(pg, "dynamics", models::to_string(p.dynamics));
    f.set_attr(pg, "state", p.dynamics == models::Dynamics::leaky ? "v" : "r");
    f.set_attr(pg, "tau", p.tau);
    f.set_attr(pg, "rate_function",
               p.dynamics == models::Dynamics::leaky ? models::to_string(p.phi.kind) : "rectified");
  }
}

// Population names become HDF5 group names and the comma-separated `populations` attribute. The
// configuration admits identifiers only; a circuit built in code is checked here.
void check_population_names(const models::LayerSpec& spec) {
  for (const auto& p : spec.circuit.populations)
    if (p.name.find_first_of("/,") != std::string::npos || p.name == "." || p.name == "..")
      throw config_error("network.circuit.populations." + p.name,
                         "population name '" + p.name +
                             "' cannot name an HDF5 group in /simulate (no '/', ',', '.' or '..')");
}

// The stability of each image's equilibrium (after the forward pass's policy) and, for images
// with no stable equilibrium, the limit cycle the layer settles on.
void write_stability(io::H5File& f, const std::string& g, const models::Layer<double>& layer,
                     const sim::LayerCache<double>& c, std::size_t l, int N) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const int K = sim::StabilityParameters{}.keep;
  std::vector<std::string> cls(std::size_t(N), "unchecked");
  std::vector<double> max_real(std::size_t(N), nan), freq(std::size_t(N), nan);
  Mat<double> lead_re = Mat<double>::Constant(N, K, nan), lead_im = lead_re;
  for (std::size_t q = 0; q < c.checked.size(); ++q) {
    const int j = c.checked[q];
    const auto& s = c.stability.samples[q];
    cls[std::size_t(j)] = sim::to_string(s.cls);
    max_real[std::size_t(j)] = s.max_real;
    freq[std::size_t(j)] = s.frequency_hz;
    for (std::size_t k = 0; k < s.leading.size() && int(k) < K; ++k) {
      lead_re(j, Eigen::Index(k)) = s.leading[k].real();
      lead_im(j, Eigen::Index(k)) = s.leading[k].imag();
    }
  }
  f.write(g + "/stability", cls);
  f.write(g + "/eig_max_real", max_real);
  f.write(g + "/eig_frequency_hz", freq);
  f.write(g + "/eig_leading_real", lead_re);
  f.write(g + "/eig_leading_imag", lead_im);
  f.set_attr(g, "found_unstable", std::int64_t(c.found_unstable));
  f.set_attr(g, "found_oscillatory", std::int64_t(c.found_oscillatory));
  f.set_attr(g, "found_marginal", std::int64_t(c.found_marginal));
  f.set_attr(g, "reintegrated", std::int64_t(c.reintegrated));
  f.set_attr(g, "no_stable_equilibrium", std::int64_t(c.no_stable));
  std::vector<int> none;
  for (int j = 0; j < N; ++j)
    if (c.solve.sample_status[std::size_t(j)] == sim::SolverStatus::unstable) none.push_back(j);
  if (none.empty()) return;
  const auto osc = sim::measure_oscillation(layer, c.in, none);
  const auto& pops = layer.spec.circuit.populations;
  std::vector<std::int64_t> idx(none.begin(), none.end()), periodic;
  std::vector<double> period, fhz;
  Mat<double> amp(Eigen::Index(none.size()), Eigen::Index(pops.size()));
  for (std::size_t q = 0; q < none.size(); ++q) {
    const auto& o = osc[q];
    periodic.push_back(o.periodic ? 1 : 0);
    period.push_back(o.periodic ? o.period_ms : nan);
    fhz.push_back(o.periodic ? o.frequency_hz : nan);
    for (std::size_t p = 0; p < pops.size(); ++p)
      amp(Eigen::Index(q), Eigen::Index(p)) = o.amplitude[p];
    if (o.periodic)
      std::fprintf(stderr,
                   "layer %zu, image %d: no stable equilibrium; the circuit oscillates with period "
                   "%.4g ms (%.4g Hz), E amplitude %.3g (see %s/limit_cycle)\n",
                   l, none[q], o.period_ms, o.frequency_hz, o.amplitude[0], g.c_str());
    else
      std::fprintf(
          stderr, "layer %zu, image %d: no stable equilibrium and no periodic orbit in %g ms%s\n",
          l, none[q], sim::OscillationParameters{}.t_end, o.finite ? "" : " (the state diverged)");
  }
  const std::string lc = g + "/limit_cycle";
  f.write(lc + "/images", idx);
  f.write(lc + "/periodic", periodic);
  f.write(lc + "/period_ms", period);
  f.write(lc + "/frequency_hz", fhz);
  f.write(lc + "/amplitude", amp);
  std::string names;
  for (const auto& p : pops) names += (names.empty() ? "" : ",") + p.name;
  f.set_attr(lc, "populations", names);
}

// The protocol's time axis: every record_interval ms from 0, and its end T (the last interval may
// be shorter; a point within 1e-12 T of T is replaced by T).
std::vector<double> protocol_times(double T, double dt) {
  std::vector<double> t;
  for (long k = 0; double(k) * dt < T * (1 - 1e-12); ++k) t.push_back(double(k) * dt);
  t.push_back(T);
  return t;
}

}  // namespace

int write_protocol(io::H5File& f, const io::Config& config, const models::Network<double>& net,
                   const io::Dataset& test, bool progress) {
  const auto& pc = config.simulate.protocol;
  if (pc.empty()) return 0;
  const std::string g = "simulate/protocol";
  const double nan = std::numeric_limits<double>::quiet_NaN();

  // Layer 0's input: each segment's image times its brightness (no jitter, no clipping).
  std::vector<sim::InputSegment<double>> input;
  std::vector<double> seg_start, seg_end, brightness;
  std::vector<std::int64_t> image, label;
  double t0 = 0;
  for (std::size_t i = 0; i < pc.segments.size(); ++i) {
    const auto& s = pc.segments[i];
    if (s.image < 0 || s.image >= test.size())
      throw config_error("simulate.protocol.segments[" + std::to_string(i) + "].image",
                         "image index " + std::to_string(s.image) +
                             " is outside the test set (0.." + std::to_string(test.size() - 1) +
                             ")");
    input.push_back(
        {Mat<double>(s.brightness * test.images.col(s.image).cast<double>()), s.duration});
    seg_start.push_back(t0);
    t0 += s.duration;  // the same sum as sim::run_protocol's
    seg_end.push_back(t0);
    brightness.push_back(s.brightness);
    image.push_back(s.image);
    label.push_back(test.labels[s.image]);
  }
  const double T = t0;
  const std::vector<double> times = protocol_times(T, pc.record_interval);
  const std::size_t Tn = times.size();
  f.write(g + "/t", times);
  f.write(g + "/segments/start", seg_start);
  f.write(g + "/segments/end", seg_end);
  f.write(g + "/segments/image", image);
  f.write(g + "/segments/label", label);
  f.write(g + "/segments/brightness", brightness);
  std::vector<std::string> p_name;
  std::vector<std::int64_t> p_layer, p_silence;
  std::vector<double> p_start, p_end, p_current;
  for (const auto& q : pc.perturbations) {
    p_name.push_back(q.population);
    p_layer.push_back(q.layer);
    p_start.push_back(q.start);
    p_end.push_back(q.end);
    p_current.push_back(q.silence ? 0.0 : q.current);
    p_silence.push_back(q.silence ? 1 : 0);
  }
  f.write(g + "/perturbations/population", p_name);
  f.write(g + "/perturbations/layer", p_layer);
  f.write(g + "/perturbations/start", p_start);
  f.write(g + "/perturbations/end", p_end);
  f.write(g + "/perturbations/current", p_current);
  f.write(g + "/perturbations/silence", p_silence);
  f.set_attr(g, "duration", T);
  f.set_attr(g, "record_interval", pc.record_interval);

  int failures = 0;
  bool failed_below = false;
  Progress bar(progress);
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const auto& layer = net.layers[l];
    if (layer.spec.kind != models::LayerKind::circuit) continue;  // the readout
    const std::string lg = g + "/layer_" + std::to_string(l);
    const auto& pops = layer.spec.circuit.populations;
    std::vector<sim::Perturbation> windows;
    for (std::size_t i = 0; i < pc.perturbations.size(); ++i) {
      const auto& q = pc.perturbations[i];
      if (q.layer >= 0 && std::size_t(q.layer) != l) continue;
      const int k = models::find_population(layer.spec.circuit, q.population);
      if (k < 0)  // the configuration checks this; a network built in code may differ
        throw config_error(
            "simulate.protocol.perturbations[" + std::to_string(i) + "].population",
            "layer " + std::to_string(l) + " has no population '" + q.population + "'");
      windows.push_back({k, q.start, q.end, q.current, q.silence});
    }
    // The state of every population at each recorded time (NaN where not reached).
    std::vector<Mat<double>> state;
    for (const auto& p : pops)
      state.push_back(Mat<double>::Constant(p.size, Eigen::Index(Tn), nan));
    std::size_t seen = 0;
    std::string status = "skipped";
    double steps = 0;
    if (!failed_below) {
      sim::CircuitState<double> z;
      sim::initial_state(layer, 1, z);
      const auto res =
          sim::run_protocol<double>(layer, input, windows, config.ode, z, times,
                                    [&](double t, const sim::CircuitState<double>& s) {
                                      if (seen >= Tn) return;
                                      for (std::size_t k = 0; k < pops.size(); ++k)
                                        state[k].col(Eigen::Index(seen)) = s.z[k];
                                      ++seen;
                                      bar.update("protocol layer " + std::to_string(l), long(seen),
                                                 long(Tn), "t = " + std::to_string(int(t)) + " ms");
                                    });
      status = sim::to_string(res.status);
      steps = res.iterations;
      if (!res.ok() || seen < Tn) {
        ++failures;
        failed_below = true;
        std::fprintf(stderr,
                     "warning: protocol, layer %zu: the integration stopped at t = %g ms (%s); "
                     "the layers above are not integrated\n",
                     l, res.t_final, res.describe().c_str());
        if (res.ok()) status = "diverged";
      }
    }
    std::string names;
    for (const auto& p : pops) names += (names.empty() ? "" : ",") + p.name;
    f.write_scalar(lg + "/ode_steps", steps);
    for (std::size_t k = 0; k < pops.size(); ++k) {
      const auto& p = pops[k];
      const std::string pg = lg + "/populations/" + p.name;
      f.write(pg + "/trace", Mat<double>(state[k].transpose()));
      f.write(pg + "/rate", Mat<double>(rates(p, state[k]).transpose()));
      f.set_attr(pg, "index", std::int64_t(k));
      f.set_attr(pg, "size", std::int64_t(p.size));
      f.set_attr(pg, "dynamics", models::to_string(p.dynamics));
      f.set_attr(pg, "state", p.dynamics == models::Dynamics::leaky ? "v" : "r");
      f.set_attr(pg, "tau", p.tau);
    }
    f.set_attr(lg, "populations", names);
    f.set_attr(lg, "preset", layer.spec.circuit.preset);
    f.set_attr(lg, "n_E", std::int64_t(layer.spec.n_E));
    f.set_attr(lg, "status", status);
    // The next layer's input: this layer's output rates, held constant over each record
    // interval at the mean of their values at its two ends.
    Mat<double> out;
    models::apply_phi(layer.spec.phi, state[0], out);
    // The durations are taken against the running sum that sim::run_protocol forms, so that its
    // segment edges are the recorded times exactly (and the last observation, at T, is made).
    input.clear();
    double edge = 0;
    for (std::size_t k = 0; k + 1 < Tn; ++k) {
      const double d = times[k + 1] - edge;
      input.push_back(
          {Mat<double>(0.5 * (out.col(Eigen::Index(k)) + out.col(Eigen::Index(k + 1)))), d});
      edge += d;
    }
  }
  f.set_attr(g, "failed_layers", std::int64_t(failures));
  return failures;
}

int write_simulation(io::H5File& f, const io::Config& config, const models::Network<double>& net,
                     const io::Dataset& test, bool progress) {
  const auto& sc = config.simulate;
  const int N = int(sc.images.size());
  Mat<double> x(test.images.rows(), N);
  std::vector<std::int64_t> idx, labels;
  for (int j = 0; j < N; ++j) {
    const int i = sc.images[j];
    if (i < 0 || i >= test.size())
      throw config_error("simulate.images", "image index " + std::to_string(i) +
                                                " is outside the test set (0.." +
                                                std::to_string(test.size() - 1) + ")");
    x.col(j) = test.images.col(i).cast<double>();
    idx.push_back(i);
    labels.push_back(test.labels[i]);
  }
  for (const auto& layer : net.layers)
    if (layer.spec.kind == models::LayerKind::circuit) check_population_names(layer.spec);
  std::mt19937_64 rng(config.data.test_seed + 7777);
  io::apply_jitter<double>(x, sc.eps, rng);
  f.write("simulate/images", idx);
  f.write("simulate/labels", labels);
  f.write_scalar("simulate/eps", sc.eps);
  std::vector<double> times(sc.record_points);
  for (int k = 0; k < sc.record_points; ++k) times[k] = sc.t_max * k / (sc.record_points - 1);
  f.write("simulate/t", times);

  int failures = 0;
  Progress bar(progress);
  Mat<double> in = x;
  sim::LayerCache<double> c;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const auto& layer = net.layers[l];
    const std::string g = "simulate/layer_" + std::to_string(l);
    // Equilibrium of this layer for the previous layer's equilibrium rates.
    sim::forward_layer(layer, in, config.fixed_point, c);
    const Mat<double>& v_eq = c.z.v();
    f.write(g + "/v_eq", Mat<double>(v_eq.transpose()));
    std::vector<double> mean(N), var(N);
    for (int j = 0; j < N; ++j) {
      mean[j] = v_eq.col(j).mean();
      var[j] = (v_eq.col(j).array() - mean[j]).square().mean();
    }
    f.write(g + "/eq_mean", mean);
    f.write(g + "/eq_var", var);
    f.set_attr(g, "kind", models::to_string(layer.spec.kind));
    f.set_attr(g, "n_E", std::int64_t(layer.spec.n_E));
    if (layer.spec.kind == models::LayerKind::circuit) {
      std::vector<std::int64_t> its(c.solve.sample_iterations.begin(),
                                    c.solve.sample_iterations.end());
      f.write(g + "/fp_iterations", its);
      f.write(g + "/fp_residual", c.solve.sample_residual);
      f.write(g + "/fp_status", statuses(c.solve));
      write_stability(f, g, layer, c, l, N);
      failures += c.solve.failed_samples;
      // ODE traces of every population from the solvers' common initial state.
      std::vector<sim::CircuitState<double>> traces;
      traces.reserve(times.size());
      sim::CircuitState<double> z;
      sim::initial_state(layer, N, z);
      const auto ores = sim::integrate<double>(
          layer, c.in, config.ode, z, times, [&](double t, const sim::CircuitState<double>& s) {
            traces.push_back(s);
            bar.update("simulate layer " + std::to_string(l), long(traces.size()),
                       long(times.size()), "t = " + std::to_string(int(t)) + " ms");
          });
      std::vector<Mat<double>> tv;
      tv.reserve(traces.size());
      for (const auto& s : traces) tv.push_back(s.v());
      f.write_tensor(g + "/v", stack(tv),
                     {traces.size(), std::size_t(N), std::size_t(layer.spec.n_E)});
      write_populations(f, g, layer.spec, c.z, traces, z);
      f.write_scalar(g + "/ode_steps", ores.iterations);
      f.write(g + "/ode_residual", ores.sample_residual);
      f.write(g + "/ode_status", statuses(ores));
      f.write_scalar(g + "/ode_fp_max_abs_diff", (z.v() - v_eq).cwiseAbs().maxCoeff());
      failures += ores.failed_samples;
      if (!ores.ok() || !c.solve.ok())
        std::fprintf(stderr, "warning: layer %zu: fixed point %s; ODE %s\n", l,
                     c.solve.describe().c_str(), ores.describe().c_str());
    }
    in = c.r;
  }
  f.write("simulate/logits", Mat<double>(in.transpose()));
  f.set_attr("simulate", "failed_samples", std::int64_t(failures));
  return failures;
}

void run_simulate(const io::Config& config, const std::string& out_path, const std::string& command,
                  bool overwrite) {
  const std::string out = io::resolve_output(out_path);
  if (!config.simulate.weights.empty() && io::same_file(out, config.simulate.weights))
    throw config_error("simulate.weights", "the output --out " + out + " is the weights file " +
                                               config.simulate.weights +
                                               " that simulate reads; choose another --out");
  io::check_output_path(out, overwrite, "--out");
  const io::OutputLock lock(out, "--out " + out);
  io::check_output_path(out, overwrite, "--out");  // again under the lock
  std::fprintf(stderr, "%s", io::provenance_header(config, command).c_str());
  const io::Dataset test = io::load_fashion_mnist(config.data.dir, false);
  auto net = models::initialise<double>(io::network_spec(config), config.seed);
  if (!config.simulate.weights.empty()) {
    // A run file of eisim train is verified like a checkpoint (checksum, shapes, finite values).
    const io::H5File wf = io::H5File::open_read(config.simulate.weights, /*require_checksum=*/true);
    verify_run_file(wf);
    // The weights belong to the network the run trained: every network key and the precision
    // must be the run's (a shape check alone would accept another circuit of the same size).
    const io::Config trained = io::parse_config(wf.attr_string("/", "config"), {},
                                                config.simulate.weights + " (stored config)");
    std::vector<std::string> diff;
    for (const auto& d : io::config_differences(trained, config))
      if (d.rfind("network.", 0) == 0 || d.rfind("precision ", 0) == 0) diff.push_back(d);
    if (!diff.empty()) {
      std::string keys;
      for (const auto& d : diff) keys += "\n  " + d;
      throw config_error(diff.front().substr(0, diff.front().find(' ')),
                         "simulate.weights = " + config.simulate.weights +
                             " was trained with another network (trained vs this config):" + keys +
                             "\nuse the run's network and precision keys");
    }
    if (wf.attr_string("/", "status") == "failed")
      std::fprintf(stderr, "warning: %s is a run marked failed: %s\n",
                   config.simulate.weights.c_str(), wf.attr_string("/", "failure").c_str());
    load_network(wf, net);
  }
  int failures = 0;
  io::write_atomically(out, [&](io::H5File& f) {
    io::write_provenance(f, config, command);
    failures = write_simulation(f, config, net, test, config.train.progress);
    failures += write_protocol(f, config, net, test, config.train.progress);
  });
  std::fprintf(stderr, "wrote %s (%zu images, %zu layers%s%s)\n", out.c_str(),
               config.simulate.images.size(), net.layers.size(),
               config.simulate.protocol.empty() ? "" : ", a stimulus protocol",
               failures ? ", SOME SOLVES DID NOT CONVERGE: see */fp_status, */ode_status, "
                          "protocol/*/status"
                        : "");
}

}  // namespace eisim::experiments
