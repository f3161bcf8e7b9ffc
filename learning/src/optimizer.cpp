#include "eisim/learning/optimizer.hpp"

#include <cmath>

#include "eisim/models/error.hpp"

namespace eisim::learning {

namespace {

template <class S>
std::vector<Mat<S>*> entries(models::LayerWeights<S>& w,
                             std::vector<std::string>* names = nullptr) {
  std::vector<Mat<S>*> out;
  w.for_each([&](const std::string& n, Mat<S>& m) {
    out.push_back(&m);
    if (names) names->push_back(n);
  });
  return out;
}

}  // namespace

template <class S>
void Sgd<S>::step(models::Network<S>& net, const Gradients<S>& g) {
  if (g.layers.size() != net.layers.size()) throw internal_error("Sgd::step: layer count mismatch");
  if (velocity_.size() != net.layers.size()) {
    velocity_.clear();
    for (const auto& layer : net.layers) {
      velocity_.push_back(layer.w);
      velocity_.back().for_each([](const std::string&, Mat<S>& m) { m.setZero(); });
    }
  }
  const S mu = S(spec_.momentum);
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    auto& layer = net.layers[l];
    // Weights, gradients and velocities have the same non-empty entries in the same order.
    std::vector<std::string> names;
    const auto ws = entries(layer.w, &names);
    const auto gs = entries(const_cast<models::LayerWeights<S>&>(g.layers[l]));
    const auto vs = entries(velocity_[l]);
    if (gs.size() != ws.size() || vs.size() != ws.size())
      throw internal_error("Sgd::step: gradient/velocity entries do not match the weights");
    for (std::size_t k = 0; k < names.size(); ++k) {
      if (!is_trained(layer.spec, names[k], spec_.train_inhibitory)) continue;
      Mat<S>& w = *ws[k];
      Mat<S>& v = *vs[k];
      const Mat<S>& gk = *gs[k];
      if (gk.rows() != w.rows() || gk.cols() != w.cols())
        throw internal_error("Sgd::step: gradient shape mismatch for " + names[k]);
      const bool exc = names[k] == "W_EX" || names[k] == "b";
      v = mu * v + gk;
      if (names[k] == "W_EX" && spec_.weight_decay > 0) v += S(spec_.weight_decay) * w;
      w -= S(exc ? spec_.lr_E : spec_.lr_I) * v;
    }
  }
  models::clamp_dale(net);
}

template <class S>
std::vector<double> gradient_cosines(const Gradients<S>& a, const Gradients<S>& b) {
  std::vector<double> out;
  double dot_all = 0, na_all = 0, nb_all = 0;
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    double dot = 0, na = 0, nb = 0;
    for (auto [x, y] : {std::pair{&a.layers[l].W_EX, &b.layers[l].W_EX},
                        std::pair{&a.layers[l].b, &b.layers[l].b}}) {
      dot += double(x->template cast<double>().cwiseProduct(y->template cast<double>()).sum());
      na += double(x->template cast<double>().squaredNorm());
      nb += double(y->template cast<double>().squaredNorm());
    }
    out.push_back(na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0.0);
    dot_all += dot;
    na_all += na;
    nb_all += nb;
  }
  out.push_back(na_all > 0 && nb_all > 0 ? dot_all / std::sqrt(na_all * nb_all) : 0.0);
  return out;
}

template class Sgd<float>;
template class Sgd<double>;
template std::vector<double> gradient_cosines(const Gradients<float>&, const Gradients<float>&);
template std::vector<double> gradient_cosines(const Gradients<double>&, const Gradients<double>&);

}  // namespace eisim::learning
