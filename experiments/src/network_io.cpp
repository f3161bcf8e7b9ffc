#include <iomanip>
#include <sstream>

#include "eisim/experiments/commands.hpp"
#include "eisim/models/error.hpp"

namespace eisim::experiments {

template <class S>
void save_network(io::H5File& f, const models::Network<S>& net, const std::string& group) {
  for (std::size_t l = 0; l < net.layers.size(); ++l)
    net.layers[l].w.for_each([&](const std::string& name, const Mat<S>& m) {
      f.write(group + "/layer_" + std::to_string(l) + "/" + name, m);
    });
}

template <class S>
void load_network(const io::H5File& f, models::Network<S>& net, const std::string& group) {
  for (std::size_t l = 0; l < net.layers.size(); ++l)
    net.layers[l].w.for_each([&](const std::string& name, Mat<S>& m) {
      const std::string path = group + "/layer_" + std::to_string(l) + "/" + name;
      if (!f.exists(path))
        throw data_error(f.path(), 0,
                         "missing dataset " + path +
                             " (was it written by eisim "
                             "train with the same network configuration?)");
      const Mat<double> d = f.read_matrix(path);
      if (d.rows() != m.rows() || d.cols() != m.cols()) {
        std::ostringstream os;
        os << path << " has shape (" << d.rows() << ", " << d.cols() << "), the configured network "
           << "needs (" << m.rows() << ", " << m.cols() << ")";
        throw data_error(f.path(), 0, os.str());
      }
      if (!d.allFinite())
        throw data_error(f.path(), 0,
                         path +
                             " holds non-finite values (NaN or infinity); the file is corrupt "
                             "or was written from a diverged run");
      m = d.template cast<S>();
    });
}

std::string format_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> w(header.size());
  for (std::size_t c = 0; c < header.size(); ++c) w[c] = header[c].size();
  for (const auto& r : rows)
    for (std::size_t c = 0; c < r.size() && c < w.size(); ++c) w[c] = std::max(w[c], r[c].size());
  std::ostringstream os;
  auto line = [&](const std::vector<std::string>& r) {
    for (std::size_t c = 0; c < w.size(); ++c)
      os << (c ? "  " : "") << std::setw(int(w[c])) << (c == 0 ? std::left : std::right)
         << (c < r.size() ? r[c] : "");
    os << "\n";
  };
  line(header);
  std::size_t total = 0;
  for (auto x : w) total += x + 2;
  os << std::string(total - 2, '-') << "\n";
  for (const auto& r : rows) line(r);
  return os.str();
}

template void save_network(io::H5File&, const models::Network<float>&, const std::string&);
template void save_network(io::H5File&, const models::Network<double>&, const std::string&);
template void load_network(const io::H5File&, models::Network<float>&, const std::string&);
template void load_network(const io::H5File&, models::Network<double>&, const std::string&);

}  // namespace eisim::experiments
