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

/// Run the stimulus protocol `config.simulate.protocol` (nothing if it has no segments) through
/// every circuit layer of `net` and write it under /simulate/protocol (docs/hdf5.md): layer 0
/// sees each segment's test image times its brightness, layer l > 0 the output rates of layer
/// l - 1 held constant over each record interval. `eisim simulate` calls it after
/// write_simulation; the simulate step at the end of `eisim train` does not. Returns the number
/// of layers whose integration failed.
int write_protocol(io::H5File& f, const io::Config& config, const models::Network<double>& net,
                   const io::Dataset& test, bool progress);

}  // namespace eisim::experiments
