#pragma once
#include "eisim/io/config.hpp"
#include "eisim/io/data.hpp"
#include "eisim/io/hdf5.hpp"
#include "eisim/models/network.hpp"

namespace eisim::experiments {

/// Simulate `config.simulate.images` of the test set through `net` (double precision): the
/// fixed-point equilibrium and the ODE traces of every circuit layer, written under /simulate.
/// Returns the number of samples whose solvers did not converge (also written to the file).
int write_simulation(io::H5File& f, const io::Config& config, const models::Network<double>& net,
                     const io::Dataset& test, bool progress);

}  // namespace eisim::experiments
