// Statuses and statistics of the solvers.
#include "eisim/sim/solver.hpp"

#include <algorithm>
#include <sstream>

namespace eisim::sim {

const char* to_string(SolverStatus s) {
  switch (s) {
    case SolverStatus::converged:
      return "converged";
    case SolverStatus::max_iterations:
      return "max_iterations";
    case SolverStatus::diverged:
      return "diverged";
    case SolverStatus::non_finite:
      return "non_finite";
    case SolverStatus::unstable:
      return "unstable";
  }
  return "unknown";
}

const char* to_string(StabilityCheck s) {
  switch (s) {
    case StabilityCheck::off:
      return "off";
    case StabilityCheck::integrate:
      return "integrate";
    case StabilityCheck::fail:
      return "fail";
  }
  return "unknown";
}

std::string SolveResult::describe() const {
  std::ostringstream os;
  os << to_string(status) << " after " << iterations << " iterations, residual " << residual
     << " (scaled " << scaled_residual << "), " << failed_samples << "/" << sample_status.size()
     << " samples not converged";
  if (t_final > 0) os << ", t = " << t_final << " ms";
  return os.str();
}

void AdjointStats::add(const AdjointStats& o) {
  solves += o.solves;
  failed += o.failed;
  if (!(o.worst_residual <= worst_residual)) worst_residual = o.worst_residual;
  worst_rcond = std::min(worst_rcond, o.worst_rcond);
  factorisations += o.factorisations;
  krylov_vectors += o.krylov_vectors;
  low_rank_solves += o.low_rank_solves;
  if (!o.ok()) status = o.status;
}

}  // namespace eisim::sim
