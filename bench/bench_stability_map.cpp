// Where do a circuit's equilibria stop being stable? For a grid of interneuron leak (lambda_I =
// lambda_D) and heterogeneity of the pooling weights, run Fashion-MNIST test images (brightness
// jitter as in training) through an untrained network of the configuration and count, per
// circuit layer, the equilibria the fixed-point solver finds stable, unstable and oscillatory,
// the samples re-integrated by the ODE, and those with no stable equilibrium at all. See
// bench/README.md, "bench_stability_map".
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>

#include "eisim/io/config.hpp"
#include "eisim/io/data.hpp"
#include "eisim/models/error.hpp"
#include "eisim/models/network.hpp"
#include "eisim/sim/forward.hpp"
#include "source_dir.hpp"

using namespace eisim;

namespace {

std::vector<double> parse_list(const std::string& s) {
  std::vector<double> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stod(item));
  return out;
}

struct Cell {
  long checked = 0, stable = 0, unstable = 0, oscillatory = 0, marginal = 0, reintegrated = 0,
       no_stable = 0, fallbacks = 0, failed = 0;
  double newton_mean = 0, seconds = 0;
  double max_freq = 0;  // largest frequency (Hz) of an oscillatory equilibrium
};

Cell run_cell(const io::Config& cfg, const io::Dataset& test, int images) {
  const auto spec = io::network_spec(cfg);
  const auto net = models::initialise<double>(spec, cfg.seed);
  std::mt19937_64 rng(cfg.data.test_seed + 31);
  Cell cell;
  const int B = cfg.train.batch_size;
  const auto t0 = std::chrono::steady_clock::now();
  double it_sum = 0;
  for (int from = 0; from < images; from += B) {
    const int n = std::min(B, images - from);
    Mat<double> x = test.images.middleCols(from, n).cast<double>();
    io::apply_jitter<double>(x, cfg.data.train_eps, rng);
    // Layer by layer (sim::forward_layer), so that a layer without a stable equilibrium is
    // counted rather than stopping the run as sim::forward does.
    Mat<double> in = x;
    sim::LayerCache<double> c;
    for (const auto& layer : net.layers) {
      sim::forward_layer(layer, in, cfg.fixed_point, c);
      if (layer.spec.kind == models::LayerKind::circuit) {
        cell.checked += long(c.checked.size());
        cell.unstable += c.found_unstable;
        cell.oscillatory += c.found_oscillatory;
        cell.marginal += c.found_marginal;
        cell.reintegrated += c.reintegrated;
        cell.no_stable += c.no_stable;
        cell.fallbacks += c.solve.fallback_samples;
        cell.failed += c.solve.failed_samples;
        for (int it : c.solve.sample_iterations) it_sum += it;
        for (const auto& s : c.stability.samples)
          if (s.cls == sim::Stability::oscillatory)
            cell.max_freq = std::max(cell.max_freq, s.frequency_hz);
      }
      in = c.r;
    }
  }
  cell.stable = cell.checked - cell.unstable - cell.oscillatory - cell.marginal;
  cell.newton_mean = it_sum / std::max(1.0, double(images * cfg.network.hidden_layers));
  cell.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return cell;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Stability of a circuit's equilibria over (leak, heterogeneity)"};
  std::string config = eisim::bench::compare_rules_yaml();
  std::vector<std::string> sets;
  std::string lambdas = "0.01,0.05,0.1,0.2,0.5,1.0", hets = "0.25,0.5,1.0";
  int images = 256, units = 28;
  app.add_option("--config", config, "YAML configuration (default: compare_rules.yaml)")
      ->check(CLI::ExistingFile);
  app.add_option("--set", sets, "override a config key: path.to.key=value");
  app.add_option("--lambdas", lambdas, "comma-separated leaks lambda_I = lambda_D");
  app.add_option("--heterogeneities", hets, "comma-separated lognormal sigmas of the pooling");
  app.add_option("--images", images, "test images per cell")->check(CLI::PositiveNumber);
  app.add_option("--units", units, "n_I = n_D")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  try {
    const auto base = io::load_config(config, sets);
    const io::Dataset test = io::load_fashion_mnist(base.data.dir, false, images);
    std::printf(
        "bench_stability_map: %s, %d test images, n_I = n_D = %d, pooling heterogeneous, "
        "%d layer(s) of %d, fixed_point.fallback_t_max %g ms\n",
        config.c_str(), images, units, base.network.hidden_layers, base.network.width,
        base.fixed_point.fallback_t_max);
    std::printf("%7s %5s %8s %7s %9s %12s %8s %8s %10s %9s %7s %7s %9s %7s\n", "lambda", "het",
                "checked", "stable", "unstable", "oscillatory", "marginal", "max_Hz", "reintegr.",
                "no_stable", "fallbk", "failed", "newton", "s");
    for (double h : parse_list(hets))
      for (double l : parse_list(lambdas)) {
        std::vector<std::string> s = sets;
        s.push_back("network.circuit.pooling=heterogeneous");
        s.push_back("network.circuit.n_I=" + std::to_string(units));
        s.push_back("network.circuit.n_D=" + std::to_string(units));
        std::ostringstream ls, hs;
        ls.precision(17);
        hs.precision(17);
        ls << l;
        hs << h;
        s.push_back("network.circuit.lambda_I=" + ls.str());
        s.push_back("network.circuit.lambda_D=" + ls.str());
        s.push_back("network.circuit.heterogeneity=" + hs.str());
        const auto cfg = io::load_config(config, s);
        const Cell c = run_cell(cfg, test, images);
        std::printf(
            "%7.3g %5.3g %8ld %7ld %9ld %12ld %8ld %8.3g %10ld %9ld %7ld %7ld %9.1f %7.1f\n", l, h,
            c.checked, c.stable, c.unstable, c.oscillatory, c.marginal, c.max_freq, c.reintegrated,
            c.no_stable, c.fallbacks, c.failed, c.newton_mean, c.seconds);
        std::fflush(stdout);
      }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
