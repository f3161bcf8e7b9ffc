// bench_equilibrium: how many equilibria per second do the ODE integrator (Boost.Odeint
// Dormand-Prince) and the fixed-point (Newton) solver reach for a batch of inputs through one
// circuit layer, at the same equilibrium tolerance, and what is the ratio?
//
// The question, the command and the recorded result are in bench/README.md. The inputs are
// synthetic (uniform random pixels with a per-image brightness offset), so the benchmark needs
// no data files. Timings are interleaved (fp, ode, fp, ode, ...) and reported as medians,
// because the machine is shared and noisy; compare the ratios, not the absolute numbers.
#include <CLI/CLI.hpp>
#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "eisim/models/network.hpp"
#include "eisim/sim/solver.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using eisim::Mat;
namespace models = eisim::models;
namespace sim = eisim::sim;
using Clock = std::chrono::steady_clock;

struct Options {
  int batch = 256;
  int width = 283;
  double tol = 1e-6;
  int reps = 5;
  int threads = 1;
  double stepper_ratio = 0.1;  // Dormand-Prince local error tolerance / equilibrium tolerance
  double stepper_tol = 0.0;    // fixed Dormand-Prince tolerance; 0 = stepper_ratio * tol
  double eps = 0.75;           // brightness offset ~ Uniform(-eps, eps)
  std::uint64_t seed = 1;
  std::vector<double> sweep{1e-4, 1e-6, 1e-8};
  bool per_sample = true;
};

constexpr int kPixels = 784;
constexpr int kClasses = 10;

void set_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
}

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// The layer, the inputs and the closed-form equilibrium they must reach.
struct Problem {
  models::Layer<double> layer;
  models::Layer<float> layer32;
  models::Layer<double> layer32_as_double;  ///< the float weights, for checking float states
  Mat<double> x, e;                         ///< inputs and E's drive e = W_EX x + b
  Mat<float> x32;
  sim::CircuitInput<double> in;  ///< the fixed drives of every population (sim::circuit_input)
  sim::CircuitInput<float> in32;
  sim::CircuitInput<double> in32_as_double;  ///< the float drives, for checking float states
  Mat<double> v_layernorm;     ///< sqrt(theta) * LayerNorm(e), the exact default equilibrium
  std::vector<double> offset;  ///< brightness offset of each image
  std::vector<double> mean;    ///< mean of each sample's drive over the E units
  std::vector<double> spread;  ///< standard deviation of each sample's drive over the E units
};

/// "Images": 784 uniform [0,1] pixels plus one brightness offset per image, clipped to [0,1].
Mat<double> random_images(int batch, double eps, std::mt19937_64& rng, std::vector<double>& d) {
  std::uniform_real_distribution<double> pixel(0.0, 1.0), shift(-eps, eps);
  Mat<double> x(kPixels, batch);
  d.resize(batch);
  for (int j = 0; j < batch; ++j) {
    d[j] = eps > 0 ? shift(rng) : 0.0;
    for (int i = 0; i < kPixels; ++i) x(i, j) = std::clamp(pixel(rng) + d[j], 0.0, 1.0);
  }
  return x;
}

Problem make_problem(const Options& o) {
  models::LayerSpec ls;
  ls.kind = models::LayerKind::circuit;
  ls.n_E = o.width;
  // The default circuit with the default CircuitParams: pooled, n_I = n_D = 1.
  const models::CircuitParams params;
  ls.circuit = models::make_preset("default", params, o.width, ls.phi);
  ls.theta = params.theta;
  const auto spec = models::make_network_spec(kPixels, kClasses, {ls}, 1.0, 1);
  const auto net = models::initialise<double>(spec, o.seed);
  Problem p;
  p.layer = net.layers.front();
  const auto net32 = models::cast_network<float>(net);
  p.layer32 = net32.layers.front();
  p.layer32_as_double = models::cast_network<double>(net32).layers.front();
  std::mt19937_64 rng(o.seed + 1);
  p.x = random_images(o.batch, o.eps, rng, p.offset);
  p.x32 = p.x.cast<float>();
  sim::circuit_input(p.layer, p.x, p.in);
  sim::circuit_input(p.layer32, p.x32, p.in32);
  p.e = p.in.ext[0];
  p.in32_as_double.x = p.in32.x.cast<double>();
  for (const auto& m : p.in32.ext) p.in32_as_double.ext.push_back(m.cast<double>());
  for (const auto& m : p.in32.ux) p.in32_as_double.ux.push_back(m.cast<double>());
  // Independent answer (docs: science.md section 3): mean(v) = 0 and mean(v^2) = theta.
  const double theta = params.theta;
  p.v_layernorm.resize(p.e.rows(), p.e.cols());
  p.mean.resize(o.batch);
  p.spread.resize(o.batch);
  for (int j = 0; j < o.batch; ++j) {
    p.mean[j] = p.e.col(j).mean();
    const auto c = p.e.col(j).array() - p.mean[j];
    p.spread[j] = std::sqrt(c.square().mean());
    p.v_layernorm.col(j) = (std::sqrt(theta) * c / p.spread[j]).matrix();
  }
  return p;
}

/// One way of reaching the equilibrium; `solve` starts from the shared initial state.
struct Method {
  std::string name, precision;
  int threads = 1;
  std::function<sim::SolveResult()> solve;
  std::function<Mat<double>()> v;  ///< equilibrium potentials of the last solve
  /// Worst scaled residual of the last solve's stored state, recomputed independently of the
  /// solver's report (double arithmetic, the method's own weights and drive); <= 1 converged.
  std::function<double()> recheck;
  double tol = 0.0;
  // Measurements.
  std::vector<double> seconds;
  std::vector<sim::SolveResult> results;
};

/// Worst scaled residual of state z (cast to double) for the given layer and drives.
template <class S>
double recomputed_residual(const models::Layer<double>& layer, const sim::CircuitInput<double>& in,
                           const sim::CircuitState<S>& z, double tol) {
  sim::CircuitState<double> zd;
  for (const auto& m : z.z) zd.z.push_back(m.template cast<double>());
  std::vector<double> r, scaled;
  sim::circuit_residual(layer, in, zd, sim::Tolerance{tol, tol}, r, scaled);
  double worst = 0.0;
  for (double s : scaled)
    if (!(s <= worst)) worst = s;  // NaN propagates
  return worst;
}

template <class S>
Method fixed_point(const models::Layer<S>& layer, const sim::CircuitInput<S>& in,
                   const models::Layer<double>& check_layer,
                   const sim::CircuitInput<double>& check_in, double tol, int threads,
                   const char* precision) {
  auto z = std::make_shared<sim::CircuitState<S>>();
  sim::FixedPointParameters fp;
  fp.tol = {tol, tol};
  Method m;
  m.name = "fixed point (Newton)";
  m.precision = precision;
  m.threads = threads;
  m.tol = tol;
  m.solve = [&layer, &in, fp, z] {
    sim::initial_state(layer, int(in.x.cols()), *z);
    return sim::solve_fixed_point(layer, in, fp, *z);
  };
  m.v = [z] { return Mat<double>(z->v().template cast<double>()); };
  m.recheck = [&check_layer, &check_in, z, tol] {
    return recomputed_residual(check_layer, check_in, *z, tol);
  };
  return m;
}

Method fixed_point(const Problem& p, bool single, double tol, int threads) {
  return single ? fixed_point(p.layer32, p.in32, p.layer32_as_double, p.in32_as_double, tol,
                              threads, "float")
                : fixed_point(p.layer, p.in, p.layer, p.in, tol, threads, "double");
}

sim::OdeParameters ode_parameters(double tol, const Options& o) {
  sim::OdeParameters op;
  op.tol = {tol, tol};
  op.stepper_abs_tol = op.stepper_rel_tol =
      o.stepper_tol > 0 ? o.stepper_tol : o.stepper_ratio * tol;
  return op;
}

Method ode(const Problem& p, double tol, const Options& o, int threads) {
  auto z = std::make_shared<sim::CircuitState<double>>();
  const auto op = ode_parameters(tol, o);
  Method m;
  m.name = "ODE (Dormand-Prince)";
  m.precision = "double";
  m.threads = threads;
  m.tol = tol;
  m.solve = [&p, op, z] {
    sim::initial_state(p.layer, int(p.e.cols()), *z);
    return sim::integrate(p.layer, p.in, op, *z);
  };
  m.v = [z] { return z->v(); };
  m.recheck = [&p, z, tol] { return recomputed_residual(p.layer, p.in, *z, tol); };
  return m;
}

/// Run every method `reps` times, interleaved, after one untimed warm-up round.
void measure(std::vector<Method>& methods, int reps) {
  for (auto& m : methods) {
    set_threads(m.threads);
    m.solve();
  }
  for (int r = 0; r < reps; ++r)
    for (auto& m : methods) {
      set_threads(m.threads);
      const auto t0 = Clock::now();
      auto res = m.solve();
      const auto t1 = Clock::now();
      m.seconds.push_back(std::chrono::duration<double>(t1 - t0).count());
      m.results.push_back(std::move(res));
    }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Summary {
  bool ok = true;                           ///< every timed repetition converged for every sample
  const sim::SolveResult* worst = nullptr;  ///< a failed result if any, else the last one
  double median_s = 0, min_s = 0, rate = 0;
  double mean_iterations = 0;  ///< Newton iterations per sample (fixed point)
};

Summary summarise(const Method& m, int batch) {
  Summary s;
  s.worst = &m.results.back();
  for (const auto& r : m.results)
    if (!r.ok()) {
      s.ok = false;
      s.worst = &r;
    }
  s.median_s = median(m.seconds);
  s.min_s = *std::min_element(m.seconds.begin(), m.seconds.end());
  s.rate = s.ok ? batch / s.median_s : 0.0;
  const auto& it = m.results.back().sample_iterations;
  for (int k : it) s.mean_iterations += k;
  s.mean_iterations /= std::max<std::size_t>(it.size(), 1);
  return s;
}

/// Samples for which solve_fixed_point fell back to ODE integration (their time is then part of
/// the fixed-point time). Detected at compile time: older sim/ versions have no fallback.
template <class R>
int fallback_samples(const R& r) {
  if constexpr (requires { r.fallback_samples; })
    return r.fallback_samples;
  else
    return 0;
}

double max_abs_diff(const Mat<double>& a, const Mat<double>& b) {
  return (a - b).cwiseAbs().maxCoeff();
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string rate_str(const Summary& s) {
  return s.ok ? fmt("%.0f", s.rate) : "not converged";
}

std::string ratio_str(const Summary& ode_s, const Summary& s) {
  return ode_s.ok && s.ok ? fmt("%.1fx", ode_s.median_s / s.median_s) : "n/a";
}

void print_statuses(const std::vector<Method>& methods, int batch) {
  for (const auto& m : methods) {
    const Summary s = summarise(m, batch);
    std::printf("  %-22s %-7s %d thr: %s\n", m.name.c_str(), m.precision.c_str(), m.threads,
                s.worst->describe().c_str());
  }
}

/// Median wall time of `reps` calls of f.
template <class F>
double median_time(int reps, F&& f) {
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return median(t);
}

/// Where the ODE's time goes: the cost of one right-hand side and one residual check on the
/// whole batch, against the measured time per accepted step.
void ode_cost(const Problem& p, const Method& om, const Options& o) {
  set_threads(om.threads);
  const Summary s = summarise(om, o.batch);
  const int steps = om.results.back().iterations;
  sim::CircuitState<double> z, d;
  sim::initial_state(p.layer, o.batch, z);
  z.v() = om.v();
  std::vector<double> r, sc;
  const double t_rhs = median_time(51, [&] { sim::circuit_rhs(p.layer, p.in, z, d); });
  const double t_res = median_time(51, [&] {
    sim::circuit_residual(p.layer, p.in, z, sim::Tolerance{o.tol, o.tol}, r, sc);
  });
  const double per_step = s.median_s / std::max(steps, 1);
  std::printf(
      "\nODE cost: %d accepted steps, %.3f ms per step; one circuit_rhs on the batch "
      "%.3f ms, one circuit_residual %.3f ms\n",
      steps, 1e3 * per_step, 1e3 * t_rhs, 1e3 * t_res);
  std::printf(
      "  6 RHS per Dormand-Prince step (FSAL) + 1 residual check = %.3f ms per step, "
      "%.0f%% of the measured step; the rest is odeint's vector algebra, the state "
      "copies into and out of the Eigen matrices, and rejected steps\n",
      1e3 * (6 * t_rhs + t_res), 100.0 * (6 * t_rhs + t_res) / per_step);
  std::printf("  the measured step costs %.1f right-hand sides\n", per_step / t_rhs);
}

/// The solvers judge convergence on their own (double) state; the stored state is what callers
/// get. Say so when the stored state does not meet the tolerance (e.g. float32 rounding).
void warn_if_check_fails(const Method& m) {
  const double c = m.recheck();
  if (!(c <= 1.0))
    std::printf(
        "WARNING: %s (%s, %d thr) reports %s, but its stored state has a recomputed "
        "scaled residual of %.2f > 1 at tol %.0e\n",
        m.name.c_str(), m.precision.c_str(), m.threads, sim::to_string(m.results.back().status), c,
        m.tol);
}

/// The main table at one tolerance: every method, with the ODE as the reference.
void main_table(const Problem& p, const Options& o) {
  std::vector<Method> methods;
  methods.push_back(fixed_point(p, false, o.tol, o.threads));
  methods.push_back(ode(p, o.tol, o, o.threads));
  if (o.threads != 2) methods.push_back(fixed_point(p, false, o.tol, 2));
  methods.push_back(fixed_point(p, true, o.tol, o.threads));
  measure(methods, o.reps);

  const Method& om = methods[1];
  const Summary os = summarise(om, o.batch);
  const Mat<double> v_ode = om.v();
  const double st = ode_parameters(o.tol, o).stepper_abs_tol;
  std::printf("\n== Equilibria of %d inputs through one %d-unit circuit layer, tol = %.0e ==\n",
              o.batch, o.width, o.tol);
  std::printf(
      "(abs_tol = rel_tol = %.0e for both; Dormand-Prince local error tolerance %.0e; "
      "%d timed reps, interleaved; status of the last rep, or of a failed one)\n",
      o.tol, st, o.reps);
  print_statuses(methods, o.batch);
  std::printf("\n%-20s %-9s %3s %10s %10s %13s %-36s %8s %12s %12s %8s\n", "method", "precision",
              "thr", "median ms", "min ms", "equilibria/s", "work", "check", "max|v-v_ode|",
              "max|v-LN(e)|", "ode/this");
  for (const auto& m : methods) {
    const Summary s = summarise(m, o.batch);
    const bool is_ode = &m == &om;
    const auto& last = m.results.back();
    const std::string work =
        is_ode ? fmt("%.0f steps, ", last.iterations) + fmt("t_end = %.0f ms", last.t_final)
               : fmt("%.2f Newton it./sample", s.mean_iterations) +
                     fmt(", %.0f ODE fallback", fallback_samples(last));
    const Mat<double> v = m.v();
    std::printf("%-20s %-9s %3d %10.3f %10.3f %13s %-36s %8.2f %12.2e %12.2e %8s\n", m.name.c_str(),
                m.precision.c_str(), m.threads, 1e3 * s.median_s, 1e3 * s.min_s,
                rate_str(s).c_str(), work.c_str(), m.recheck(), max_abs_diff(v, v_ode),
                max_abs_diff(v, p.v_layernorm), ratio_str(os, s).c_str());
  }
  std::printf(
      "check: worst scaled residual recomputed from the stored state with "
      "sim::circuit_residual in double (<= 1 meets the tolerance)\n");
  for (const auto& m : methods) warn_if_check_fails(m);
  ode_cost(p, om, o);
}

/// Both methods (double, --threads) at several tolerances.
void sweep_table(const Problem& p, const Options& o) {
  std::printf("\n== Tolerance sweep (double precision, %d thread(s), %d timed reps each) ==\n",
              o.threads, o.reps);
  std::vector<std::vector<Method>> runs;
  for (double tol : o.sweep) {
    std::vector<Method> methods;
    methods.push_back(fixed_point(p, false, tol, o.threads));
    methods.push_back(ode(p, tol, o, o.threads));
    measure(methods, o.reps);
    std::printf("tol %.0e:\n", tol);
    print_statuses(methods, o.batch);
    runs.push_back(std::move(methods));
  }
  std::printf("\n%6s %6s %9s %13s %6s %6s %10s %13s %6s %6s %6s %8s %9s %9s\n", "tol", "DP tol",
              "fp ms", "fp eq/s", "Newton", "check", "ode ms", "ode eq/s", "steps", "t_end",
              "check", "ode/fp", "max|dv|", "max|v-LN|");
  for (std::size_t k = 0; k < runs.size(); ++k) {
    const auto& fm = runs[k][0];
    const auto& om = runs[k][1];
    const Summary fs = summarise(fm, o.batch), os = summarise(om, o.batch);
    const Mat<double> vf = fm.v(), vo = om.v();
    std::printf("%6.0e %6.0e %9.3f %13s %6.2f %6.2f %10.1f %13s %6d %6.0f %6.2f %8s %9.2e %9.2e\n",
                o.sweep[k], ode_parameters(o.sweep[k], o).stepper_abs_tol, 1e3 * fs.median_s,
                rate_str(fs).c_str(), fs.mean_iterations, fm.recheck(), 1e3 * os.median_s,
                rate_str(os).c_str(), om.results.back().iterations, om.results.back().t_final,
                om.recheck(), ratio_str(os, fs).c_str(), max_abs_diff(vf, vo),
                std::max(max_abs_diff(vf, p.v_layernorm), max_abs_diff(vo, p.v_layernorm)));
  }
  std::printf(
      "fp/ode ms: median wall time; Newton: mean iterations per sample; t_end: simulated "
      "ms; check: recomputed worst scaled residual; max|dv| = max|v_fp - v_ode|\n");
  for (const auto& run : runs)
    for (const auto& m : run) warn_if_check_fails(m);
}

double correlation(const std::vector<double>& a, const std::vector<double>& b) {
  const auto n = double(a.size());
  double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) ma += a[i] / n, mb += b[i] / n;
  for (std::size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

/// Trajectory of one input: why some inputs need a long simulated time.
void trace(const Problem& p, int j, const sim::OdeParameters& op) {
  const Mat<double> x = p.x.col(j);
  sim::CircuitInput<double> in;
  sim::circuit_input(p.layer, x, in);
  const auto& pops = p.layer.spec.circuit.populations;
  std::printf("\ntrajectory of sample %d (brightness %+.3f, drive mean %.3f, std %.3f):\n", j,
              p.offset[j], p.mean[j], p.spread[j]);
  std::printf("%8s", "t ms");
  for (std::size_t k = 1; k < pops.size(); ++k)
    std::printf(" %10s", (pops[k].name + "[0]").c_str());  // state of the first unit
  std::printf(" %10s %10s %12s\n", "mean v", "mean v^2", "scaled res");
  const std::vector<double> times{0, 2, 5, 10, 20, 50, 100, 150, 200, 300, 400, 500, 600, 700, 800};
  sim::CircuitState<double> z;
  sim::initial_state(p.layer, 1, z);
  std::vector<double> r, sc;
  sim::integrate<double>(p.layer, in, op, z, times,
                         [&](double t, const sim::CircuitState<double>& zt) {
                           sim::circuit_residual(p.layer, in, zt, op.tol, r, sc);
                           std::printf("%8.0f", t);
                           for (std::size_t k = 1; k < zt.z.size(); ++k)
                             std::printf(" %10.4g", zt.z[k](0, 0));
                           std::printf(" %10.3g %10.4g %12.3g\n", zt.v().mean(),
                                       zt.v().squaredNorm() / double(zt.v().size()), sc[0]);
                         });
}

/// Diagnostic (one run, not interleaved): integrate each input alone to see how much simulated
/// time each needs; the batched ODE shares one step size and runs until the slowest converges.
void per_sample_table(const Problem& p, const Options& o) {
  set_threads(o.threads);
  const auto op = ode_parameters(o.tol, o);
  const int B = o.batch;
  std::vector<double> t_end(B), steps(B);
  std::vector<int> order(B);
  int failed = 0;
  const auto t0 = Clock::now();
  for (int j = 0; j < B; ++j) {
    const Mat<double> x = p.x.col(j);
    sim::CircuitInput<double> in;
    sim::circuit_input(p.layer, x, in);
    sim::CircuitState<double> z;
    sim::initial_state(p.layer, 1, z);
    const auto res = sim::integrate(p.layer, in, op, z);
    if (!res.ok()) {
      ++failed;
      std::printf("  sample %d: %s\n", j, res.describe().c_str());
    }
    t_end[j] = res.t_final;
    steps[j] = res.iterations;
    order[j] = j;
  }
  const double total = std::chrono::duration<double>(Clock::now() - t0).count();
  std::sort(order.begin(), order.end(), [&](int a, int b) { return t_end[a] < t_end[b]; });
  std::printf("\n== ODE one input at a time (tol = %.0e, one run, %d of %d not converged) ==\n",
              o.tol, failed, B);
  std::printf(
      "total %.1f ms for %d inputs (%.0f equilibria/s); correlation of t_end with the "
      "mean drive %.2f, with its std %.2f\n",
      1e3 * total, B, B / total, correlation(t_end, p.mean), correlation(t_end, p.spread));
  std::printf("%-8s %7s %9s %6s %11s %11s %10s\n", "quantile", "sample", "t_end ms", "steps",
              "brightness", "drive mean", "drive std");
  const std::pair<const char*, double> qs[] = {
      {"fastest", 0.0}, {"10%", 0.1}, {"median", 0.5}, {"90%", 0.9}, {"slowest", 1.0}};
  for (const auto& [label, q] : qs) {
    const int j = order[std::size_t(std::lround(q * (B - 1)))];
    std::printf("%-8s %7d %9.1f %6.0f %+11.3f %11.3f %10.3f\n", label, j, t_end[j], steps[j],
                p.offset[j], p.mean[j], p.spread[j]);
  }
  trace(p, order.back(), op);
  trace(p, order.front(), op);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Equilibria per second: ODE integration vs the fixed-point solver"};
  app.add_option("--batch", o.batch, "inputs per batch")->check(CLI::PositiveNumber);
  app.add_option("--width", o.width, "E units of the circuit layer")->check(CLI::Range(2, 100000));
  app.add_option("--tol", o.tol, "equilibrium tolerance (abs_tol = rel_tol)")
      ->check(CLI::PositiveNumber);
  app.add_option("--reps", o.reps, "timed repetitions per method")->check(CLI::PositiveNumber);
  app.add_option("--threads", o.threads, "OpenMP / Eigen threads")->check(CLI::PositiveNumber);
  app.add_option("--stepper-tol", o.stepper_tol,
                 "fixed Dormand-Prince local error tolerance (0 = --stepper-ratio x tol)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--stepper-ratio", o.stepper_ratio,
                 "Dormand-Prince local error tolerance as a fraction of the equilibrium tolerance")
      ->check(CLI::PositiveNumber);
  app.add_option("--eps", o.eps, "brightness offset range, Uniform(-eps, eps)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", o.seed, "seed of the weights and the inputs");
  app.add_option("--sweep", o.sweep, "tolerances of the sweep table")->check(CLI::PositiveNumber);
  app.add_flag("!--no-per-sample", o.per_sample, "skip the one-input-at-a-time ODE diagnostic");
  CLI11_PARSE(app, argc, argv);

  set_threads(o.threads);
  std::printf(
      "bench_equilibrium: batch %d, width %d, tol %.0e, reps %d, threads %d "
      "(OpenMP max %d), eps %.2f, seed %llu\n",
      o.batch, o.width, o.tol, o.reps, o.threads, max_threads(), o.eps,
      static_cast<unsigned long long>(o.seed));
  std::printf(
      "inputs: synthetic uniform [0,1] pixels + per-image brightness offset, clipped "
      "(no Fashion-MNIST); timed: the solve only (drive e = W_EX x precomputed)\n");
  const Problem p = make_problem(o);
  main_table(p, o);
  sweep_table(p, o);
  if (o.per_sample) per_sample_table(p, o);
  return 0;
}
