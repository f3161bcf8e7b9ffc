#pragma once
// A progress line on stderr, redrawn at most a few times per second.
#include <chrono>
#include <cstdio>
#include <string>

namespace eisim::experiments {

class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled) {}
  void update(const std::string& label, long done, long total, const std::string& extra) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (done < total && now - last_ < std::chrono::milliseconds(250)) return;
    last_ = now;
    const int width = 24;
    const int filled = total > 0 ? int(width * double(done) / double(total)) : width;
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %ld/%ld %s   ", label.c_str(), bar.c_str(), done, total,
                 extra.c_str());
    if (done >= total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  bool enabled_;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace eisim::experiments
