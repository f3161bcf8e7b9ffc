#include "eisim/learning/optimizer.hpp"

#include <cmath>
#include <string>

#include "eisim/models/error.hpp"

namespace eisim::learning {

template <class S>
void Sgd<S>::plan(models::Network<S>& net) {
  // Velocities restored from a checkpoint (same shapes as the weights) are kept.
  bool fresh = velocity_.size() != net.layers.size();
  for (std::size_t l = 0; !fresh && l < net.layers.size(); ++l) {
    if (velocity_[l].count() != net.layers[l].w.count()) {
      fresh = true;
      break;
    }
    for (int k = 0; k < net.layers[l].w.count(); ++k)
      if (velocity_[l].at(k).rows() != net.layers[l].w.at(k).rows() ||
          velocity_[l].at(k).cols() != net.layers[l].w.at(k).cols())
        fresh = true;
  }
  planned_for_ = &net;
  if (fresh) velocity_.clear();
  plan_.assign(net.layers.size(), {});
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    auto& layer = net.layers[l];
    if (fresh) {
      velocity_.emplace_back();
      velocity_.back().zero_like(layer.w);
    }
    for (int k = 0; k < layer.w.count(); ++k) {
      Mat<S>& w = layer.w.at(k);
      if (w.size() == 0) continue;
      const models::WeightInfo& info = layer.spec.weights[k];
      if (!is_trained(layer.spec, k, spec_.train_inhibitory)) {
        // Fixed weights never change; project them once so that Dale's law holds from here on.
        if (info.dale) w = w.cwiseMax(S(0));
        continue;
      }
      const bool decay = info.decay && spec_.weight_decay > 0;
      plan_[l].push_back({k, S(info.excitatory ? spec_.lr_E : spec_.lr_I), info.dale, decay});
    }
  }
}

template <class S>
void Sgd<S>::step(models::Network<S>& net, const Gradients<S>& g) {
  if (g.layers.size() != net.layers.size()) throw internal_error("Sgd::step: layer count mismatch");
  if (planned_for_ != &net || plan_.size() != net.layers.size() ||
      velocity_.size() != net.layers.size())
    plan(net);
  const S mu = S(spec_.momentum), wd = S(spec_.weight_decay);
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    for (const Entry& en : plan_[l]) {
      Mat<S>& w = net.layers[l].w.at(en.k);
      Mat<S>& v = velocity_[l].at(en.k);
      const Mat<S>& gk = g.layers[l].at(en.k);
      if (gk.rows() != w.rows() || gk.cols() != w.cols() || v.size() != w.size())
        throw internal_error("Sgd::step: gradient shape mismatch for " +
                             net.layers[l].w.name(en.k));
      if (mu == S(0) && !en.decay) {
        // One pass: w <- w - lr g, projected onto w >= 0 (Dale's law); the velocity stays 0.
        if (en.dale)
          w = (w - en.lr * gk).cwiseMax(S(0));
        else
          w -= en.lr * gk;
        continue;
      }
      v = mu * v + gk;
      if (en.decay) v += wd * w;
      if (en.dale)
        w = (w - en.lr * v).cwiseMax(S(0));
      else
        w -= en.lr * v;
    }
  }
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
