// Linear stability of equilibria (see stability.hpp). The Jacobian's entries come from the
// circuit's one vector-Jacobian product (sim::vjp) with unit cotangents, so no equation is
// written here a second time.
#include "eisim/sim/stability.hpp"

#include <Eigen/Cholesky>
#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <optional>
#include <random>
#include <sstream>

#include "eisim/models/error.hpp"
#include "eisim/sim/solver.hpp"
#include "spectrum.hpp"

namespace eisim::sim {

using models::Layer;

const char* to_string(Stability s) {
  switch (s) {
    case Stability::stable:
      return "stable";
    case Stability::unstable:
      return "unstable";
    case Stability::oscillatory:
      return "oscillatory";
    case Stability::marginal:
      return "marginal";
    case Stability::unknown:
      return "unknown";
  }
  return "unknown";
}

void StabilityResult::recount() {
  stable = unstable = oscillatory = marginal = unknown = 0;
  for (const auto& s : samples) switch (s.cls) {
      case Stability::stable:
        ++stable;
        break;
      case Stability::unstable:
        ++unstable;
        break;
      case Stability::oscillatory:
        ++oscillatory;
        break;
      case Stability::marginal:
        ++marginal;
        break;
      case Stability::unknown:
        ++unknown;
        break;
    }
}

std::string StabilityResult::describe() const {
  std::ostringstream os;
  os << not_stable() << " of " << samples.size() << " equilibria not stable";
  const SampleStability* worst_u = nullptr;
  const SampleStability* worst_o = nullptr;
  for (const auto& s : samples) {
    if (s.cls == Stability::unstable && (!worst_u || s.max_real > worst_u->max_real)) worst_u = &s;
    if (s.cls == Stability::oscillatory && (!worst_o || s.max_real > worst_o->max_real))
      worst_o = &s;
  }
  if (worst_u)
    os << "; " << unstable << " unstable (largest eigenvalue " << worst_u->max_real << " /ms)";
  if (worst_o)
    os << "; " << oscillatory << " oscillatory (growth " << worst_o->max_real << " /ms at "
       << worst_o->frequency_hz << " Hz)";
  if (marginal > 0) os << "; " << marginal << " more marginal (counted apart)";
  if (unknown > 0) os << "; " << unknown << " not computed (non-finite)";
  return os.str();
}

namespace {

// Real parts within this of x tie to rounding (classify orders them by imaginary part).
double tie_tolerance(double x) {
  return 1e-12 * std::max(1.0, std::abs(x));
}

// The class of a spectrum from its leading eigenvalue.
void classify_leading(std::complex<double> lead, const StabilityParameters& params,
                      SampleStability& out) {
  out.max_real = lead.real();
  out.frequency_hz = std::abs(lead.imag()) * 1000.0 / (2.0 * std::numbers::pi);
  // A complex pair shows as conjugates; a real eigenvalue's imaginary part is exactly 0 from
  // a real Schur form (Eigen's or LAPACK's).
  const bool complex_pair = lead.imag() != 0.0;
  if (!(out.max_real > params.margin))
    out.cls = Stability::stable;
  else if (out.max_real <= params.marginal)
    out.cls = Stability::marginal;
  else
    out.cls = complex_pair ? Stability::oscillatory : Stability::unstable;
}

// The eigenvalue classify() puts first (no list kept: keep = 0), found by one scan without
// sorting or allocating: the largest real part, and among the eigenvalues whose real parts tie
// with it to rounding (as classify's groups), the largest imaginary part.
SampleStability classify_scan(const Eigen::Ref<const Eigen::VectorXcd>& ev,
                              const StabilityParameters& params) {
  SampleStability out;
  double top = -std::numeric_limits<double>::infinity();
  for (Eigen::Index k = 0; k < ev.size(); ++k) {
    if (!std::isfinite(ev(k).real()) || !std::isfinite(ev(k).imag())) return out;
    top = std::max(top, ev(k).real());
  }
  if (ev.size() == 0) {
    out.cls = Stability::stable;
    return out;
  }
  const double tie = tie_tolerance(top);
  std::complex<double> lead(-std::numeric_limits<double>::infinity(),
                            -std::numeric_limits<double>::infinity());
  for (Eigen::Index k = 0; k < ev.size(); ++k) {
    const std::complex<double> x = ev(k);
    if (top - x.real() <= tie &&
        (x.imag() > lead.imag() || (x.imag() == lead.imag() && x.real() > lead.real())))
      lead = x;
  }
  classify_leading(lead, params, out);
  return out;
}

}  // namespace

SampleStability classify(const Eigen::Ref<const Eigen::VectorXcd>& ev,
                         const StabilityParameters& params) {
  if (params.keep <= 0) return classify_scan(ev, params);
  SampleStability out;
  std::vector<std::complex<double>> l(ev.data(), ev.data() + ev.size());
  for (const auto& x : l)
    if (!std::isfinite(x.real()) || !std::isfinite(x.imag())) return out;
  std::sort(l.begin(), l.end(), [](const auto& a, const auto& b) {
    return a.real() > b.real() || (a.real() == b.real() && a.imag() > b.imag());
  });
  // Eigenvalues whose real parts tie to rounding (a complex pair whose real part equals a real
  // eigenvalue, e.g. E's -1/tau_E) are ordered by imaginary part, so the leading one, and the
  // frequency, do not depend on the last bit of the real parts.
  for (std::size_t g = 0; g < l.size();) {
    std::size_t e = g + 1;
    const double tie = tie_tolerance(l[g].real());
    while (e < l.size() && l[g].real() - l[e].real() <= tie) ++e;
    std::stable_sort(l.begin() + std::ptrdiff_t(g), l.begin() + std::ptrdiff_t(e),
                     [](const auto& a, const auto& b) { return a.imag() > b.imag(); });
    g = e;
  }
  if (l.empty()) {
    out.cls = Stability::stable;
    return out;
  }
  classify_leading(l[0], params, out);
  l.resize(std::min<std::size_t>(l.size(), std::size_t(std::max(params.keep, 0))));
  out.leading = std::move(l);
  return out;
}

// LAPACK's double-shift QR on a Hessenberg matrix (reference LAPACK, liblapack-dev): with
// wantt = wantz = 0 it computes the eigenvalues alone.
extern "C" void dlahqr_(const int* wantt, const int* wantz, const int* n, const int* ilo,
                        const int* ihi, double* h, const int* ldh, double* wr, double* wi,
                        const int* iloz, const int* ihiz, double* z, const int* ldz, int* info);

namespace detail {

// Every eigenvalue of a square matrix, in `ev`; false if the QR iteration did not converge.
// Eigen's RealSchur (under EigenSolver) updates the whole quasi-triangular Schur form at every
// QR sweep, which only eigenvectors need: for eigenvalues alone LAPACK's dlahqr updates only
// the rows and columns of the still-active window, 1.5-1.8x less work on the 100-350 unit
// matrices of the larger circuits (docs/numerics.md, "The cost of the eigensolve").
bool all_eigenvalues(const Eigen::Ref<const Eigen::MatrixXd>& A, Eigen::VectorXcd& ev) {
  const int n = int(A.rows());
  ev.resize(n);
  if (n == 0) return true;
  thread_local Eigen::HessenbergDecomposition<Eigen::MatrixXd> hd;
  thread_local Eigen::MatrixXd H;
  thread_local Eigen::VectorXd wr, wi;
  hd.compute(A);
  H = hd.matrixH();
  wr.resize(n);
  wi.resize(n);
  const int no = 0, one = 1;
  int info = 0;
  double unused = 0.0;
  dlahqr_(&no, &no, &n, &one, &n, H.data(), &n, wr.data(), wi.data(), &one, &one, &unused, &one,
          &info);
  if (info != 0 || !wr.allFinite() || !wi.allFinite()) return false;
  for (int k = 0; k < n; ++k) ev(k) = {wr(k), wi(k)};
  return true;
}

}  // namespace detail

namespace {

// The largest absolute row sums of D and C B (infinity norms): the balancing scale of the
// certificates and their margin.
struct RowSums {
  double d = 0.0, cb = 0.0;
};
RowSums max_row_sums(const Eigen::Ref<const Eigen::MatrixXd>& D,
                     const Eigen::Ref<const Eigen::MatrixXd>& CB) {
  // Column by column (the matrices are column-major): the row sums accumulate in a vector.
  RowSums r;
  if (D.rows() == 0) return r;
  r.cb = CB.cwiseAbs().rowwise().sum().maxCoeff();
  r.d = D.cwiseAbs().rowwise().sum().maxCoeff();
  return r;
}

}  // namespace

double certificate_margin(const Eigen::Ref<const Eigen::MatrixXd>& D,
                          const Eigen::Ref<const Eigen::MatrixXd>& CB, double a) {
  // M = [[D, I], [CB, a I]] is similar to [[D, s I], [CB / s, a I]] (T = diag(I, s I)); with
  // s = sqrt(max row sum |CB|) both off-diagonal blocks carry the same units (1/ms), so the
  // infinity norm, a bound on every |lambda|, scales with the circuit's rates.
  const Eigen::Index f = D.rows();
  const auto [d, cb] = max_row_sums(D, CB);
  const double s = cb > 0.0 ? std::sqrt(cb) : 0.0;
  double norm = std::abs(a);
  if (f > 0) norm = std::max({norm, d + s, (s > 0.0 ? cb / s : 0.0) + std::abs(a)});
  return certificate_shift * norm;
}

namespace {

// f > 2: the logarithmic norm. K = [[D, s I], [CB / s, a I]] is similar to the reduction
// (T = diag(I, s I)) for any s > 0; for every eigenpair K x = lambda x,
// Re(lambda) |x|^2 = x^* H x with H the symmetric part of K, so H < -tau I (a Cholesky
// factorisation of -H - tau I succeeds) puts every eigenvalue left of -tau. Sufficient only:
// the coupling blocks s I and C B / s must nearly cancel in H, and how well they do depends on
// s. Tried in turn: s = c sqrt(max row sum |C B|), c = 0.5 and 0.7 (pv_sst_vip at the initial
// weights: H's largest eigenvalue +0.015, -0.017, -0.010, +0.007, +0.038 /ms at c = 0.35, 0.5,
// 0.7, 1, 1.5). Where none holds, the eigensolver decides.
// -H - tau I = [[P, Q^T], [Q, r I]] with P = -(D + D^T) / 2 - tau I, Q = -C B / (2 s) - (s / 2) I
// and r = -(a + tau) > 0, so it is positive definite exactly when the Schur complement
// P - Q^T Q / r is (Schur complement lemma). With G = (C B)^T C B, Q^T Q = G / (4 s^2) +
// (C B + (C B)^T) / 4 + (s^2 / 4) I: G is formed once for both tries (a symmetric rank-f
// update, f^3 multiply-adds), then each try is one f x f Cholesky factorisation, f^3 / 3
// (against (2f)^3 / 3 for the 2f x 2f matrix).
bool lognorm_certified(const Eigen::Ref<const Eigen::MatrixXd>& D,
                       const Eigen::Ref<const Eigen::MatrixXd>& CB, double a, double tau) {
  const Eigen::Index f = D.rows();
  const auto [d, cb] = max_row_sums(D, CB);
  // With C B = 0 the reduction is block-triangular for every s: a coupling s I negligible
  // against the rates (a != 0 here, or the caller has refused).
  const double s0 = cb > 0.0 ? std::sqrt(cb) : 1e-8 * std::max(std::abs(a), d);
  const double r = -(a + tau);
  thread_local Eigen::MatrixXd G, N;  // (C B)^T C B; the Schur complement (lower triangles)
  G.setZero(f, f);
  G.selfadjointView<Eigen::Lower>().rankUpdate(CB.transpose());
  N.resize(f, f);
  for (const double c : {0.5, 0.7}) {
    const double s = c * s0;
    // Only the lower triangle is right (G's upper one is 0), and only it is read.
    N.noalias() =
        -0.5 * (D + D.transpose()) - (0.25 / r) * (CB + CB.transpose()) - (0.25 / (r * s * s)) * G;
    N.diagonal().array() -= tau + 0.25 * s * s / r;
    const Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>, Eigen::Lower> llt(N);
    if (llt.info() == Eigen::Success) return true;
  }
  return false;
}

}  // namespace

bool certified_stable(const Eigen::Ref<const Eigen::MatrixXd>& D,
                      const Eigen::Ref<const Eigen::MatrixXd>& CB, double a) {
  const Eigen::Index f = D.rows();
  if (CB.rows() != f || CB.cols() != f || D.cols() != f) return false;
  if (!D.allFinite() || !CB.allFinite() || !std::isfinite(a)) return false;
  // Shifted by tau: the eigenvalues of M + tau I are those of M plus tau, so a Hurwitz
  // polynomial of M + tau I puts every eigenvalue of M left of -tau. The shifted matrix has the
  // same form, with D + tau I and a + tau.
  const double tau = certificate_margin(D, CB, a);
  const double as = a + tau;
  if (!(as < 0.0)) return false;  // a itself is an eigenvalue (E's units outside the reduction)
  if (f == 0) return true;
  if (f > 2) return lognorm_certified(D, CB, a, tau);
  if (f == 1) {
    // (lambda - as)(lambda - d) - c = lambda^2 - (as + d) lambda + (as d - c).
    const double d = D(0, 0) + tau;
    return -(as + d) > 0.0 && as * d - CB(0, 0) > 0.0;
  }
  // det((lambda - as)(lambda - D') - CB), D' = D + tau I, from the 2 x 2 matrix polynomial's
  // entries: diagonal lambda^2 + p1 lambda + p0 and lambda^2 + r1 lambda + r0, off-diagonal
  // -(lambda - as) D_ij - CB_ij = e1 lambda + e0 and f1 lambda + f0 (scalar code: the
  // coefficients are few, and arrays of them cost more in stack traffic than the arithmetic).
  const double d0 = D(0, 0) + tau, d1 = D(1, 1) + tau;
  const double p1 = -(as + d0), p0 = as * d0 - CB(0, 0);
  const double r1 = -(as + d1), r0 = as * d1 - CB(1, 1);
  const double e1 = -D(0, 1), e0 = as * D(0, 1) - CB(0, 1);
  const double f1 = -D(1, 0), f0 = as * D(1, 0) - CB(1, 0);
  const double b3 = p1 + r1;
  const double b2 = p0 + r0 + p1 * r1 - e1 * f1;
  const double b1 = p1 * r0 + p0 * r1 - (e1 * f0 + e0 * f1);
  const double b0 = p0 * r0 - e0 * f0;
  // Routh-Hurwitz (Lienard-Chipart) for lambda^4 + b3 lambda^3 + b2 lambda^2 + b1 lambda + b0.
  return b3 > 0.0 && b2 > 0.0 && b1 > 0.0 && b0 > 0.0 && b3 * b2 - b1 > 0.0 &&
         b3 * b2 * b1 - b1 * b1 - b3 * b3 * b0 > 0.0;
}

namespace {

using detail::all_eigenvalues;

// Where the class alone is asked for and the certificate holds (every eigenvalue left of
// -tau < 0): `stable`, with NaN growth rate and frequency; a negative margin takes the
// eigensolver.
std::optional<SampleStability> certified(const Eigen::Ref<const Eigen::MatrixXd>& D,
                                         const Eigen::Ref<const Eigen::MatrixXd>& CB, double a,
                                         const StabilityParameters& params) {
  if (!params.class_only || !(params.margin >= 0.0) || !certified_stable(D, CB, a))
    return std::nullopt;
  SampleStability out;
  out.cls = Stability::stable;
  out.max_real = out.frequency_hz = std::numeric_limits<double>::quiet_NaN();
  return out;
}

// The small reductions (f <= 8) in fixed-size or fixed-capacity storage, compiled for their
// size, with Eigen's EigenSolver: no heap allocation.
template <class Mx>
SampleStability reduced_spectrum(const Eigen::Ref<const Eigen::MatrixXd>& D,
                                 const Eigen::Ref<const Eigen::MatrixXd>& CB, double a, int n_E,
                                 const StabilityParameters& params) {
  const Eigen::Index f = D.rows();
  if (auto c = certified(D, CB, a, params)) return *c;
  Mx M = Mx::Zero(2 * f, 2 * f);
  M.topLeftCorner(f, f) = D;
  M.bottomLeftCorner(f, f) = CB;
  M.topRightCorner(f, f).diagonal().setOnes();
  M.bottomRightCorner(f, f).diagonal().setConstant(a);
  const auto spectrum = [&](auto& ev) {
    if (f > 0) {
      Eigen::EigenSolver<Mx> es(M, false);
      if (es.info() != Eigen::Success) return SampleStability{};  // unknown
      ev.head(2 * f) = es.eigenvalues();
    }
    ev.tail(ev.size() - 2 * f).setConstant(a);
    return classify(ev, params);
  };
  if (params.keep <= 0) {  // a once, in fixed-capacity storage
    constexpr int kCap =
        Mx::MaxRowsAtCompileTime == Eigen::Dynamic ? Eigen::Dynamic : Mx::MaxRowsAtCompileTime + 1;
    Eigen::Matrix<std::complex<double>, Eigen::Dynamic, 1, 0, kCap, 1> ev(2 * f + 1);
    return spectrum(ev);
  }
  // a's multiplicity n_E - f, listed at most `keep` times (enough for the leading ones).
  const Eigen::Index na =
      std::max<Eigen::Index>(1, std::min<Eigen::Index>(n_E - f, std::max(params.keep, 1)));
  Eigen::VectorXcd ev(2 * f + na);
  return spectrum(ev);
}

// The larger reductions. Units whose column of C B is zero do not act on E (pv_sst_vip's VIP
// units only inhibit SST): with the r acting units `act`, [[D, I], [C B, a I]] has the
// eigenvalue a (f - r times more) and otherwise the eigenvalues of the (f + r) x (f + r) matrix
// [[D, C B_act], [P, a I_r]], P selecting the acting units' rows. Proof: for lambda != a,
// w = y_act / (lambda - a) turns its eigenproblem into (lambda - a)(lambda - D) y = C B y
// (the columns of C B outside `act` are zero), that of the 2f x 2f matrix; and
// det(mu^2 - mu (D - a) - C B) = mu^(f - r) det(mu - [[D - a, C B_act], [P, 0]]), mu = lambda - a.
SampleStability reduced_spectrum_large(const Eigen::Ref<const Eigen::MatrixXd>& D,
                                       const Eigen::Ref<const Eigen::MatrixXd>& CB, double a,
                                       int n_E, const StabilityParameters& params) {
  const Eigen::Index f = D.rows();
  if (auto c = certified(D, CB, a, params)) return *c;
  std::vector<Eigen::Index> act;
  for (Eigen::Index j = 0; j < f; ++j)
    if ((CB.col(j).array() != 0.0).any()) act.push_back(j);
  const Eigen::Index r = Eigen::Index(act.size());
  thread_local Eigen::MatrixXd L;
  L.setZero(f + r, f + r);
  L.topLeftCorner(f, f) = D;
  for (Eigen::Index k = 0; k < r; ++k) {
    L.col(f + k).head(f) = CB.col(act[std::size_t(k)]);
    L(f + k, act[std::size_t(k)]) = 1.0;
    L(f + k, f + k) = a;
  }
  // a's multiplicity: n_E - f from the reduction, f - r from the units that do not act on E.
  const Eigen::Index na =
      std::max<Eigen::Index>(1, std::min<Eigen::Index>(n_E - r, std::max(params.keep, 1)));
  thread_local Eigen::VectorXcd ev, lev;
  if (!all_eigenvalues(L, lev)) return SampleStability{};  // unknown
  ev.resize(f + r + na);
  ev.head(f + r) = lev;
  ev.tail(na).setConstant(a);
  return classify(ev, params);
}

}  // namespace

namespace detail {

// J = Lambda + L where Lambda is lam[g] on the units of group g (rows start[g] to
// start[g + 1]: each population's leak, -1/tau_p) and L has low rank r: with pooled weights
// every recurrent block is rank 1 (ssn's default circuit: r <= 2 for 353 units). The span V of
// the groups' parts of L's range is invariant under J (Lambda maps each group's part into
// itself, L maps everything into its range), so J's eigenvalues are those of V^T J V (at most
// groups x r square) and lam[g] on the rest of group g. L's range is sampled from a few random
// directions (a fixed seed: the same answer every call) and accepted only if L lies in it to
// `tol` (Frobenius); false otherwise (no such structure: the dense solve). Any basis that
// contains each group's part of the range is invariant, so no rank decision is needed there.
bool low_rank_spectrum(const Eigen::MatrixXd& J, const std::vector<Eigen::Index>& start,
                       const std::vector<double>& lam, double tol, int keep, Eigen::VectorXcd& ev) {
  constexpr Eigen::Index kProbe = 12;
  const Eigen::Index n = J.rows(), G = Eigen::Index(lam.size());
  // A non-finite Jacobian (overflow at a finite state) goes to the dense solve, which reports
  // it as unknown: NaN would pass no acceptance test below but could leave V empty.
  if (n < 4 * kProbe || !J.allFinite() || !std::isfinite(tol)) return false;
  Eigen::MatrixXd L = J;
  for (Eigen::Index g = 0; g < G; ++g)
    for (Eigen::Index i = start[g]; i < start[g + 1]; ++i) L(i, i) -= lam[std::size_t(g)];
  // The probe directions: drawn once per size and thread (a fixed seed, so the same matrix
  // every call), not per equilibrium (4236 normal draws for ssn's 353 units).
  thread_local Eigen::MatrixXd omega;
  if (omega.rows() != n) {
    std::mt19937_64 rng(20261202);
    std::normal_distribution<double> normal;
    omega = Eigen::MatrixXd::NullaryExpr(n, kProbe,
                                         [&](Eigen::Index, Eigen::Index) { return normal(rng); });
  }
  Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(L * omega);
  qr.setThreshold(1e-5);  // well above rounding (float Jacobians): the residual test decides
  const Eigen::Index r = qr.rank();
  if (r > kProbe / 2) return false;
  const Eigen::MatrixXd Q = qr.householderQ() * Eigen::MatrixXd::Identity(n, r);
  if (!((L - Q * (Q.transpose() * L)).norm() <= tol)) return false;
  // Orthonormal bases of each group's part of the range, block-diagonal.
  std::vector<Eigen::Index> s(static_cast<std::size_t>(G), 0);
  Eigen::Index total = 0;
  for (Eigen::Index g = 0; g < G; ++g)
    total += s[std::size_t(g)] = std::min(r, start[g + 1] - start[g]);
  Eigen::MatrixXd V = Eigen::MatrixXd::Zero(n, total);
  for (Eigen::Index g = 0, c = 0; g < G; c += s[std::size_t(g)], ++g) {
    const Eigen::Index ng = start[g + 1] - start[g], sg = s[std::size_t(g)];
    if (sg == 0) continue;
    const Eigen::HouseholderQR<Eigen::MatrixXd> part(Q.middleRows(start[g], ng));
    V.block(start[g], c, ng, sg) = part.householderQ() * Eigen::MatrixXd::Identity(ng, sg);
  }
  const Eigen::MatrixXd H = V.transpose() * J * V;
  Eigen::VectorXcd hev;
  if (!all_eigenvalues(H, hev)) return false;
  // Each lam[g] (n_g - s_g times), listed at most `keep` times (enough for the leading ones).
  std::vector<std::complex<double>> l(hev.data(), hev.data() + hev.size());
  for (Eigen::Index g = 0; g < G; ++g)
    l.insert(l.end(),
             std::size_t(std::min<Eigen::Index>(start[g + 1] - start[g] - s[std::size_t(g)],
                                                std::max(keep, 1))),
             lam[std::size_t(g)]);
  ev = Eigen::Map<const Eigen::VectorXcd>(l.data(), Eigen::Index(l.size()));
  return true;
}

}  // namespace detail

SampleStability full_stability(const Eigen::MatrixXd& J, const std::vector<Eigen::Index>& start,
                               const std::vector<double>& lam, double tol,
                               const StabilityParameters& params) {
  Eigen::VectorXcd ev;
  if (!detail::low_rank_spectrum(J, start, lam, tol, params.keep, ev) &&
      !detail::all_eigenvalues(J, ev))
    return SampleStability{};  // unknown
  return classify(ev, params);
}

SampleStability reduced_stability(const Eigen::Ref<const Eigen::MatrixXd>& D,
                                  const Eigen::Ref<const Eigen::MatrixXd>& CB, double a, int n_E,
                                  const StabilityParameters& params) {
  // Small problems in fixed-size storage (the default circuit: 4 x 4), compiled for their size;
  // up to 16 x 16 in fixed-capacity storage: no heap allocation.
  using Eigen::Matrix;
  switch (D.rows()) {
    case 1:
      return reduced_spectrum<Matrix<double, 2, 2>>(D, CB, a, n_E, params);
    case 2:
      return reduced_spectrum<Matrix<double, 4, 4>>(D, CB, a, n_E, params);
    case 3:
      return reduced_spectrum<Matrix<double, 6, 6>>(D, CB, a, n_E, params);
    default:
      break;
  }
  constexpr int kMax = 16;
  if (D.rows() <= kMax / 2)
    return reduced_spectrum<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, 0, kMax, kMax>>(
        D, CB, a, n_E, params);
  return reduced_spectrum_large(D, CB, a, n_E, params);
}

template <class S>
void select_samples(const CircuitInput<S>& in, const std::vector<int>& cols, CircuitInput<S>& out,
                    bool with_x) {
  const auto pick = [&](const Mat<S>& a, Mat<S>& b) {
    if (a.size() == 0) {
      b.resize(0, 0);
      return;
    }
    b.resize(a.rows(), Eigen::Index(cols.size()));
    for (std::size_t q = 0; q < cols.size(); ++q) b.col(Eigen::Index(q)) = a.col(cols[q]);
  };
  if (with_x)
    pick(in.x, out.x);
  else
    out.x.resize(0, 0);
  out.ext.resize(in.ext.size());
  for (std::size_t k = 0; k < in.ext.size(); ++k) pick(in.ext[k], out.ext[k]);
  out.ux.resize(in.ux.size());
  for (std::size_t k = 0; k < in.ux.size(); ++k) pick(in.ux[k], out.ux[k]);
}

template <class S>
void select_samples(const CircuitState<S>& z, const std::vector<int>& cols, CircuitState<S>& out) {
  out.z.resize(z.z.size());
  for (std::size_t k = 0; k < z.z.size(); ++k) {
    out.z[k].resize(z.z[k].rows(), Eigen::Index(cols.size()));
    for (std::size_t q = 0; q < cols.size(); ++q)
      out.z[k].col(Eigen::Index(q)) = z.z[k].col(cols[q]);
  }
}

namespace {

template <class S>
models::LayerWeights<S>* no_grads() {
  return nullptr;
}
template <class S>
std::vector<Mat<S>>* no_mats() {
  return nullptr;
}
template <class S>
Mat<S>* no_mat() {
  return nullptr;
}

// Offsets of each population's units in the stacked state.
std::vector<int> offsets(const models::CircuitSpec& c, int from) {
  std::vector<int> off(c.populations.size() + 1, 0);
  for (std::size_t p = 0; p < c.populations.size(); ++p)
    off[p + 1] = off[p] + (int(p) >= from ? c.populations[p].size : 0);
  return off;
}

// Unit i of population p is held at its rectification boundary (an integrator population at
// r <= 0 with a negative push: population_terms zeroes its partials there).
template <class S>
bool clamped(const models::Population& p, const CircuitState<S>& z, const CircuitTerms<S>& t,
             int pi, int i, int col) {
  return p.dynamics == models::Dynamics::integrator && z.z[pi](i, col) <= S(0) &&
         t.dF_dq[pi](i, col) == S(0) && t.dF_dz[pi](i, col) == S(0);
}

template <class S>
bool finite_sample(const CircuitState<S>& z, int col) {
  for (const auto& m : z.z)
    if (!m.col(col).allFinite()) return false;
  return true;
}

// Rows of J = T^-1 dF/dz for the units [from, P) of every replicated sample: the cotangent
// e_c / tau_c through vjp gives row c of J (J^T e_c). Each sample is replicated once per
// probed unit; column q * n + c of the result belongs to sample q and unit c.
template <class S>
void jacobian_rows(const Layer<S>& layer, const CircuitInput<S>& in, const CircuitState<S>& z,
                   const std::vector<int>& cols, int from, CircuitTerms<S>& t,
                   std::vector<Mat<S>>& rows, CircuitInput<S>& in_r, CircuitState<S>& z_r) {
  const auto& c = layer.spec.circuit;
  const std::vector<int> off = offsets(c, from);
  const int n = off.back();
  std::vector<int> rep;
  rep.reserve(cols.size() * std::size_t(n));
  for (int s : cols)
    for (int k = 0; k < n; ++k) rep.push_back(s);
  // The layer input x itself is not read without weight gradients: only the drives.
  select_samples(in, rep, in_r, /*with_x=*/false);
  select_samples(z, rep, z_r);
  evaluate(layer, in_r, z_r, t, true);
  const Eigen::Index R = Eigen::Index(rep.size());
  thread_local std::vector<Mat<S>> w;
  w.resize(c.populations.size());
  for (int p = 0; p < from; ++p) w[std::size_t(p)].resize(0, 0);
  for (std::size_t p = std::size_t(from); p < c.populations.size(); ++p) {
    w[p].setZero(c.populations[p].size, R);
    const S inv_tau = S(1.0 / c.populations[p].tau);
    for (std::size_t q = 0; q < cols.size(); ++q)
      for (int i = 0; i < c.populations[p].size; ++i)
        w[p](i, Eigen::Index(q) * n + off[p] + i) = inv_tau;
  }
  // Zero-filled rather than empty, so the buffers are reused (vjp adds into them).
  rows.resize(c.populations.size());
  for (std::size_t p = 0; p < c.populations.size(); ++p) rows[p].setZero(c.populations[p].size, R);
  vjp(layer, in_r, t, w, no_grads<S>(), &rows, no_mats<S>(), no_mat<S>());
}

}  // namespace

template <class S>
Eigen::MatrixXd dense_jacobian(const Layer<S>& layer, const CircuitInput<S>& in,
                               const CircuitState<S>& z, int sample) {
  const auto& c = layer.spec.circuit;
  if (layer.spec.kind != models::LayerKind::circuit)
    throw internal_error("dense_jacobian: not a circuit layer");
  const std::vector<int> off = offsets(c, 0);
  const int N = off.back();
  CircuitTerms<S> t;
  std::vector<Mat<S>> rows;
  CircuitInput<S> in_r;
  CircuitState<S> z_r;
  jacobian_rows(layer, in, z, {sample}, 0, t, rows, in_r, z_r);
  Eigen::MatrixXd J = Eigen::MatrixXd::Zero(N, N);
  for (std::size_t p = 0; p < c.populations.size(); ++p) {
    if (rows[p].size() == 0) continue;
    for (int r = 0; r < N; ++r)
      for (int i = 0; i < c.populations[p].size; ++i) J(r, off[p] + i) = double(rows[p](i, r));
  }
  return J;
}

template <class S>
StabilityResult stability(const Layer<S>& layer, const CircuitInput<S>& in,
                          const CircuitState<S>& z, const StabilityParameters& params,
                          const std::vector<int>& samples) {
  const auto& c = layer.spec.circuit;
  if (layer.spec.kind != models::LayerKind::circuit)
    throw internal_error("stability: not a circuit layer");
  std::vector<int> cols = samples;
  if (cols.empty()) {
    cols.resize(std::size_t(z.v().cols()));
    for (std::size_t j = 0; j < cols.size(); ++j) cols[j] = int(j);
  }
  StabilityResult res;
  // The reduced path replicates each sample once per interneuron unit: bound the replicated
  // columns (memory) by checking large batches in chunks.
  const std::size_t per =
      std::max<std::size_t>(1, 4096 / std::size_t(std::max(1, offsets(c, 1).back())));
  if (cols.size() > per) {
    for (std::size_t from = 0; from < cols.size(); from += per) {
      const std::vector<int> part(cols.begin() + std::ptrdiff_t(from),
                                  cols.begin() + std::ptrdiff_t(std::min(cols.size(), from + per)));
      const StabilityResult r = stability(layer, in, z, params, part);
      res.samples.insert(res.samples.end(), r.samples.begin(), r.samples.end());
    }
    res.recount();
    return res;
  }
  res.samples.resize(cols.size());
  // Samples with a non-finite state are not computed.
  std::vector<int> ok;
  std::vector<std::size_t> ok_at;
  for (std::size_t q = 0; q < cols.size(); ++q)
    if (finite_sample(z, cols[q])) {
      ok.push_back(cols[q]);
      ok_at.push_back(q);
    }
  const models::CircuitStructure st = models::analyse(c);
  const int n_E = c.populations[0].size;
  const std::vector<int> off = offsets(c, 1);
  const int m = off.back();  // interneuron units
  const bool reduced =
      st.eliminate_E && c.populations[0].dynamics == models::Dynamics::leaky && m < n_E;
  // No feedback at all: every population leaky and driven, directly or through others, by the
  // input alone (the feed-forward inorm circuit, E included). The Jacobian is then block-
  // triangular in dependency order with diagonal blocks -I / tau_p: the same spectrum for every
  // sample, and nothing to compute per sample (a dense eigensolve of n_E + m units otherwise).
  if (st.core.empty() && !st.eliminate_E) {
    // Each population's eigenvalue with its multiplicity, at most `keep` times.
    std::vector<std::complex<double>> l;
    for (const auto& pop : c.populations)
      l.insert(l.end(), std::size_t(std::clamp(pop.size, 1, std::max(params.keep, 1))),
               -1.0 / pop.tau);
    const Eigen::VectorXcd ev =
        Eigen::Map<const Eigen::VectorXcd>(l.data(), Eigen::Index(l.size()));
    const SampleStability same = classify(ev, params);
    for (std::size_t q : ok_at) res.samples[q] = same;
    res.recount();
    return res;
  }
  // Buffers reused from call to call (the training loop checks every batch).
  thread_local CircuitTerms<S> t;
  thread_local std::vector<Mat<S>> rows, w2, cb;
  thread_local CircuitInput<S> in_r;
  thread_local CircuitState<S> z_r;
  if (!ok.empty() && reduced) {
    const double a = -1.0 / c.populations[0].tau;
    jacobian_rows(layer, in, z, ok, 1, t, rows, in_r, z_r);
    // C B: push the E block of each row (row j of C) through J_E,I^T with a second vjp.
    w2.resize(c.populations.size());
    cb.resize(c.populations.size());
    for (std::size_t p = 0; p < c.populations.size(); ++p) {
      w2[p].resize(0, 0);
      cb[p].setZero(c.populations[p].size, rows[0].cols());
    }
    w2[0] = rows[0] * S(-a);  // C^T columns / tau_E
    vjp(layer, in_r, t, w2, no_grads<S>(), &cb, no_mats<S>(), no_mat<S>());
    Eigen::MatrixXd Dq, CBq;
    for (std::size_t q = 0; q < ok.size(); ++q) {
      // Free units (not held at a rectification boundary).
      std::vector<std::pair<int, int>> free;  // (population, unit)
      for (std::size_t p = 1; p < c.populations.size(); ++p)
        for (int i = 0; i < c.populations[p].size; ++i)
          if (!clamped(c.populations[p], z_r, t, int(p), i, int(q) * m + off[p] + i))
            free.emplace_back(int(p), i);
      const int f = int(free.size());
      Dq.resize(f, f);
      CBq.resize(f, f);
      for (int r = 0; r < f; ++r) {
        const Eigen::Index col = Eigen::Index(q) * m + off[free[r].first] + free[r].second;
        for (int k = 0; k < f; ++k) {
          const auto [p, i] = free[k];
          Dq(r, k) = rows[p].size() > 0 ? double(rows[p](i, col)) : 0.0;
          CBq(r, k) = cb[p].size() > 0 ? double(cb[p](i, col)) : 0.0;
        }
      }
      res.samples[ok_at[q]] = reduced_stability(Dq, CBq, a, n_E, params);
    }
  } else {
    const std::vector<int> off0 = offsets(c, 0);
    const int N = off0.back();
    for (std::size_t q = 0; q < ok.size(); ++q) {
      jacobian_rows(layer, in, z, {ok[q]}, 0, t, rows, in_r, z_r);
      std::vector<int> idx;  // free units
      for (std::size_t p = 0; p < c.populations.size(); ++p)
        for (int i = 0; i < c.populations[p].size; ++i)
          if (!clamped(c.populations[p], z_r, t, int(p), i, off0[p] + i))
            idx.push_back(off0[p] + i);
      std::vector<int> pop_of(static_cast<std::size_t>(N)), unit_of(static_cast<std::size_t>(N));
      for (std::size_t p = 0; p < c.populations.size(); ++p)
        for (int i = 0; i < c.populations[p].size; ++i) {
          pop_of[std::size_t(off0[p] + i)] = int(p);
          unit_of[std::size_t(off0[p] + i)] = i;
        }
      const int f = int(idx.size());
      Eigen::MatrixXd J = Eigen::MatrixXd::Zero(f, f);
      for (int r = 0; r < f; ++r)
        for (int k = 0; k < f; ++k) {
          const auto& R = rows[std::size_t(pop_of[std::size_t(idx[k])])];
          if (R.size() > 0) J(r, k) = double(R(unit_of[std::size_t(idx[k])], idx[r]));
        }
      if (f == 0) {
        res.samples[ok_at[q]] = classify(Eigen::VectorXcd(0), params);
        continue;
      }
      // The free units are in population order: each population's leak on its block.
      std::vector<Eigen::Index> start{0};
      std::vector<double> lam;
      for (int r = 0; r < f; ++r)
        if (r == 0 || pop_of[std::size_t(idx[r])] != pop_of[std::size_t(idx[r - 1])]) {
          if (r > 0) start.push_back(r);
          lam.push_back(-1.0 / c.populations[std::size_t(pop_of[std::size_t(idx[r])])].tau);
        }
      start.push_back(f);
      // Rounding of the Jacobian in S (a float Jacobian's diagonal sums the leak and the
      // recurrent term): the low-rank test accepts residuals of that size.
      const double tol = 4.0 * double(std::numeric_limits<S>::epsilon()) * J.norm();
      res.samples[ok_at[q]] = full_stability(J, start, lam, tol, params);
    }
  }
  res.recount();
  return res;
}

template <class S>
std::vector<Oscillation> measure_oscillation(const Layer<S>& layer, const CircuitInput<S>& in,
                                             const std::vector<int>& cols,
                                             const OscillationParameters& params) {
  const auto& pops = layer.spec.circuit.populations;
  const int n = int(cols.size());
  std::vector<Oscillation> out(cols.size());
  if (n == 0) return out;
  if (!(params.window > 0 && params.window <= params.t_end && params.points >= 3))
    throw internal_error("measure_oscillation: bad window");
  CircuitInput<S> ins;
  select_samples(in, cols, ins);
  CircuitState<S> z;
  initial_state(layer, n, z);
  std::vector<double> times(std::size_t(params.points));
  const double t0 = params.t_end - params.window;
  for (int k = 0; k < params.points; ++k)
    times[std::size_t(k)] = t0 + params.window * k / (params.points - 1);
  // Population means per sample at each observation: mean[p](k, q).
  std::vector<Eigen::MatrixXd> mean(pops.size(),
                                    Eigen::MatrixXd::Constant(params.points, n, std::nan("")));
  int k = 0;
  OdeParameters op;
  op.t_max = params.t_end;
  op.max_steps = 10000000;
  op.tol = {0.0, 0.0};  // never "settled": integrate the whole span
  const TraceObserver<S> observe = [&](double, const CircuitState<S>& s) {
    if (k >= params.points) return;
    for (std::size_t p = 0; p < pops.size(); ++p)
      mean[p].row(k) = s.z[p].colwise().mean().template cast<double>();
    ++k;
  };
  integrate(layer, ins, op, z, times, observe);

  for (int q = 0; q < n; ++q) {
    Oscillation& o = out[std::size_t(q)];
    o.amplitude.assign(pops.size(), 0.0);
    for (std::size_t p = 0; p < pops.size(); ++p) {
      const auto m = mean[p].col(q).head(k);
      if (k < params.points || !m.allFinite()) {
        o.finite = false;
        o.amplitude[p] = std::nan("");
        continue;
      }
      o.amplitude[p] = 0.5 * (m.maxCoeff() - m.minCoeff());
    }
    if (!o.finite) continue;
    const auto e = mean[0].col(q);
    const double c = e.mean();
    std::vector<double> up;  // upward crossings of the window mean, linearly interpolated
    for (int i = 1; i < params.points; ++i)
      if (e(i - 1) < c && e(i) >= c) {
        const double f = (c - e(i - 1)) / (e(i) - e(i - 1));
        up.push_back(times[std::size_t(i - 1)] +
                     f * (times[std::size_t(i)] - times[std::size_t(i - 1)]));
      }
    // A limit cycle keeps its amplitude: E's range in the window's two halves agrees to 10 %
    // (a damped oscillation shrinks), and it is more than rounding.
    const int h = params.points / 2;
    const double r1 = e.head(h).maxCoeff() - e.head(h).minCoeff();
    const double r2 = e.tail(params.points - h).maxCoeff() - e.tail(params.points - h).minCoeff();
    const bool sustained = r2 > 1e-6 * (1.0 + std::abs(c)) && std::abs(r1 - r2) <= 0.1 * r2;
    if (up.size() >= 4 && sustained) {
      o.periodic = true;
      o.period_ms = (up.back() - up.front()) / double(up.size() - 1);
      o.frequency_hz = 1000.0 / o.period_ms;
    }
  }
  return out;
}

#define EISIM_INSTANTIATE(S)                                                                \
  template Eigen::MatrixXd dense_jacobian<S>(const Layer<S>&, const CircuitInput<S>&,       \
                                             const CircuitState<S>&, int);                  \
  template StabilityResult stability<S>(const Layer<S>&, const CircuitInput<S>&,            \
                                        const CircuitState<S>&, const StabilityParameters&, \
                                        const std::vector<int>&);                           \
  template void select_samples<S>(const CircuitInput<S>&, const std::vector<int>&,          \
                                  CircuitInput<S>&, bool);                                  \
  template std::vector<Oscillation> measure_oscillation<S>(                                 \
      const Layer<S>&, const CircuitInput<S>&, const std::vector<int>&,                     \
      const OscillationParameters&);                                                        \
  template void select_samples<S>(const CircuitState<S>&, const std::vector<int>&,          \
                                  CircuitState<S>&);
EISIM_INSTANTIATE(float)
EISIM_INSTANTIATE(double)
#undef EISIM_INSTANTIATE

}  // namespace eisim::sim
