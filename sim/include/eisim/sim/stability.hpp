#pragma once
// Linear stability of a circuit's equilibria: the leading eigenvalues of the full circuit's
// Jacobian d(dz/dt)/dz (every population, in 1/ms, the ODE's time units) at each solved
// equilibrium, and their classification. See docs/numerics.md, "Stability".
#include <Eigen/Dense>
#include <complex>
#include <string>
#include <vector>

#include "eisim/models/network.hpp"
#include "eisim/sim/circuit.hpp"

namespace eisim::sim {

enum class Stability {
  stable,       ///< every eigenvalue has a negative real part (a damped oscillation if the
                ///< leading pair is complex: `frequency_hz` > 0)
  unstable,     ///< the leading eigenvalue is real and positive (a saddle or an unstable node)
  oscillatory,  ///< the leading pair is complex with a positive real part: past a Hopf
                ///< bifurcation, the circuit oscillates around this point
  marginal,     ///< the leading real part is positive but at most StabilityParameters::marginal:
                ///< growth too slow to tell from a stationary point at the solver's tolerance
                ///< (an e-folding time of 100 s or more with the config default)
  unknown,      ///< not computed (non-finite state or Jacobian)
};
const char* to_string(Stability s);

struct StabilityParameters {
  /// Eigenvalues with real part <= margin (1/ms) count as not growing. Floating-point error in
  /// the eigenvalues of a well-scaled Jacobian is ~1e-15 / ms; the margin keeps exactly
  /// marginal modes (integral control without leak) on the stable side.
  double margin = 1e-9;
  /// Leading real parts in (margin, marginal] (1/ms) are `marginal`, not `unstable` or
  /// `oscillatory` (frequency_hz still says which). 0: no such class. The forward pass sets
  /// FixedPointParameters::stability_marginal (config default 1e-5 /ms).
  double marginal = 0.0;
  int keep = 4;  ///< leading eigenvalues kept per sample (by decreasing real part)
  /// The class only, where a certificate gives it (reduced_stability, certified_stable): if
  /// it shows every eigenvalue's real part below -certificate_shift x (a bound on the spectral
  /// radius), the sample is `stable` without an eigensolve, and max_real and frequency_hz are
  /// NaN (no list either). Elsewhere, and where the certificate does not hold, as without it.
  /// The training step's counts need the class only
  /// (FixedPointParameters::stability_class_only).
  bool class_only = false;
};

/// The certificate's margin (StabilityParameters::class_only), relative to a bound on the
/// reduced matrix's spectral radius (certificate_margin): wide enough that rounding in the
/// characteristic polynomial's coefficients cannot certify a spectrum whose leading real part
/// is above the margin.
inline constexpr double certificate_shift = 1e-3;

/// Outcome for one equilibrium.
struct SampleStability {
  Stability cls = Stability::unknown;
  double max_real = 0.0;                      ///< leading real part (1/ms); < 0 stable
  double frequency_hz = 0.0;                  ///< |Im| of the leading eigenvalue / 2 pi, in Hz
  std::vector<std::complex<double>> leading;  ///< `keep` eigenvalues, by decreasing real part
};

struct StabilityResult {
  std::vector<SampleStability> samples;
  int stable = 0, unstable = 0, oscillatory = 0, marginal = 0, unknown = 0;
  /// Unstable and oscillatory: `marginal` ones are counted apart, not in here.
  int not_stable() const { return unstable + oscillatory; }
  void recount();  ///< the five counts from `samples`
  /// "2 of 32 equilibria not stable: 1 unstable (leading eigenvalue 0.03/ms), 1 oscillatory
  /// (12.4 Hz, growth 0.01/ms)"
  std::string describe() const;
};

/// The dense Jacobian d(dz/dt)/dz (1/ms) of one sample (column `sample` of z and `in`), all
/// populations in order, built from the circuit's one vector-Jacobian product (sim::vjp) with
/// unit cotangents. Rows of rectified units held at their boundary are zero. For verification
/// and small circuits; stability() does not form it when E can be eliminated.
template <class S>
Eigen::MatrixXd dense_jacobian(const models::Layer<S>& layer, const CircuitInput<S>& in,
                               const CircuitState<S>& z, int sample);

/// The stability of the equilibria z (one per column). Units of integrator populations held at
/// their rectification boundary (r = 0 with F < 0) are left out: the boundary holds them. When
/// E is leaky and receives no recurrent input (E eliminated by the solver), the spectrum is
/// that of a 2m x 2m matrix (m = interneuron units) plus -1/tau_E: J = [[a I, B], [C, D]] with
/// a = -1/tau_E has, besides a, the eigenvalues of [[D, I], [C B, a I]]; otherwise the full
/// dense Jacobian is used (where it is each population's leak plus a low-rank part, as with
/// pooled weights, through a small invariant subspace: docs/numerics.md, "The cost of the
/// eigensolve"). `samples` restricts the check to those columns (empty = all); the
/// result has one entry per checked column, in that order.
template <class S>
StabilityResult stability(const models::Layer<S>& layer, const CircuitInput<S>& in,
                          const CircuitState<S>& z, const StabilityParameters& params = {},
                          const std::vector<int>& samples = {});

/// Classify a spectrum (any order). With params.keep <= 0 no list is kept (`leading` empty) and
/// nothing is allocated; the class, max_real and frequency are the same.
SampleStability classify(const Eigen::Ref<const Eigen::VectorXcd>& eigenvalues,
                         const StabilityParameters& params);

/// A certificate of stability for the reduction below, f = D.rows(): true only if every
/// eigenvalue of [[D, I], [CB, a I]] and a have real parts below -tau = -certificate_margin(D,
/// CB, a). For f <= 2 exact (up to rounding): the Routh-Hurwitz conditions on the shifted
/// matrix's characteristic polynomial det((lambda - a)(lambda - D) - CB). For f > 2 sufficient
/// only: the symmetric part of the similar matrix [[D, s I], [CB / s, a I]] below -tau (a
/// Cholesky test, for two scalings s; the logarithmic norm bounds every real part). False for
/// non-finite input.
bool certified_stable(const Eigen::Ref<const Eigen::MatrixXd>& D,
                      const Eigen::Ref<const Eigen::MatrixXd>& CB, double a);

/// certificate_shift x the infinity norm of [[D, s I], [CB / s, a I]], s = sqrt(max row sum of
/// |CB|): a bound on the spectral radius of the similar matrix [[D, I], [CB, a I]] that scales
/// with the circuit's rates (1/ms), whatever their time scale.
double certificate_margin(const Eigen::Ref<const Eigen::MatrixXd>& D,
                          const Eigen::Ref<const Eigen::MatrixXd>& CB, double a);

/// The reduction's classification, shared by stability() and the fixed-point solver's fast path
/// (FixedPointParameters::stability_fast_path): the spectrum of [[D, I], [CB, a I]] (2f x 2f)
/// and a = -1/tau_E, where D = d(dz_I/dt)/dz_I and CB = (d(dz_I/dt)/dv)(d(dv/dt)/dz_I) over the
/// f free interneuron units, in 1/ms and 1/ms^2. `n_E` is E's size: a is an eigenvalue of
/// multiplicity n_E - f besides those of the 2f x 2f matrix (listed that often in `leading`, up
/// to params.keep times; with keep <= 0 no list is kept).
SampleStability reduced_stability(const Eigen::Ref<const Eigen::MatrixXd>& D,
                                  const Eigen::Ref<const Eigen::MatrixXd>& CB, double a, int n_E,
                                  const StabilityParameters& params);

/// The classification of a full circuit Jacobian J = d(dz/dt)/dz (1/ms) over the free units,
/// in population order: population g's rows start at start[g] (start.back() = J.rows()) and
/// lam[g] = -1/tau_g. Where J is lam on those blocks plus a low-rank part to `tol` (Frobenius;
/// pooled weights, ssn) from a small projected eigenproblem, else from a dense eigensolve.
/// Shared by stability() and the fixed-point solver's fast path for circuits whose every
/// population is a leaky Newton unknown (ssn). `unknown` where the eigensolve failed.
SampleStability full_stability(const Eigen::MatrixXd& J, const std::vector<Eigen::Index>& start,
                               const std::vector<double>& lam, double tol,
                               const StabilityParameters& params);

/// What a layer does where it has no stable equilibrium, per sample: the ODE integrated from the
/// initial state, observed over the last `window` ms.
struct Oscillation {
  bool periodic = false;   ///< at least three cycles of E's mean state in the window
  double period_ms = 0.0;  ///< mean interval between upward crossings of E's window mean
  double frequency_hz = 0.0;
  std::vector<double> amplitude;  ///< per population: half the range of its mean state
  bool finite = true;             ///< false: the state became non-finite (it diverged)
};

struct OscillationParameters {
  double t_end = 2000.0;   ///< ms integrated from the initial state
  double window = 1000.0;  ///< ms at the end that are analysed
  int points = 4001;       ///< observations in the window
};

/// Integrate samples `cols` of a layer from the common initial state (Boost.Odeint, as
/// sim::integrate) and measure the limit cycle of each (period from E's population-mean state,
/// amplitude of every population's mean state).
template <class S>
std::vector<Oscillation> measure_oscillation(const models::Layer<S>& layer,
                                             const CircuitInput<S>& in,
                                             const std::vector<int>& cols,
                                             const OscillationParameters& params = {});

/// Columns `cols` of every matrix of a batch input / state (repeats allowed). Without x, the
/// input keeps only the drives (enough for evaluate() and a vjp without weight gradients).
template <class S>
void select_samples(const CircuitInput<S>& in, const std::vector<int>& cols, CircuitInput<S>& out,
                    bool with_x = true);
template <class S>
void select_samples(const CircuitState<S>& z, const std::vector<int>& cols, CircuitState<S>& out);

}  // namespace eisim::sim
