#pragma once

// Direct double-precision implementations of one row of the fused linear + KD loss and its
// gradient (docs/methods.md §5, §5.5.1-§5.5.2), written from the
// definitions and the gradient table rather than from the kernels' online sums: the oracle of
// the emulated CUDA kernel test. Rows are std::vector<double> (Row); a label equal to
// ignore_index marks an ignored row, a label of -1 (another negative) a row without one.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kd_loss_reference.h"

namespace tskd_fast::testing {

struct FlkdOptionsRef {
  int64_t divergence = 0;  // 0 forward_kl .. 5 tvd (tskd_fast::FlkdDivergence)
  double beta = 0.5;
  int64_t ka = 0;  // 0 none, 1 probability shift, 2 label smoothing
  double lsr_p = 0.9;
  bool scale_tau2 = true;
  double ce_weight = 0.0;
  int64_t ignore_index = -100;
};

struct FlkdRowRef {
  double loss;
  Row grad;  // d loss / d s
};

// log_softmax(x / tau); the caller has checked that max x is finite.
inline Row log_softmax_ref(const Row& x, double tau) {
  const double mx = *std::max_element(x.begin(), x.end());
  double sum = 0.0;
  for (double v : x) sum += std::exp((v - mx) / tau);
  Row out(x.size());
  for (size_t k = 0; k < x.size(); ++k) out[k] = (x[k] - mx) / tau - std::log(sum);
  return out;
}

// a log(a / b) with 0 log 0 = 0.
inline double xlog_ratio(double a, double log_a, double log_b) {
  return a > 0.0 ? a * (log_a - log_b) : 0.0;
}

struct BucketTerms {
  double divergence;  // D(p, q)
  Row u;              // q_k dD/dq_k
};

// D and u of every bucket (a column, or a top-k bucket), from the definitions and the gradient
// table of docs/methods.md §5.5.1.
inline BucketTerms bucket_terms(const Row& log_p, const Row& log_q, int64_t divergence,
                                double beta) {
  BucketTerms out{0.0, Row(log_p.size(), 0.0)};
  for (size_t k = 0; k < log_p.size(); ++k) {
    const double p = std::exp(log_p[k]), q = std::exp(log_q[k]);
    switch (divergence) {
      case 0:  // KL(p || q)
        out.divergence += xlog_ratio(p, log_p[k], log_q[k]);
        out.u[k] = -p;
        break;
      case 1:  // KL(q || p)
        out.divergence += xlog_ratio(q, log_q[k], log_p[k]);
        out.u[k] = xlog_ratio(q, log_q[k], log_p[k]);
        break;
      case 2: {  // beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q
        const double m = beta * p + (1 - beta) * q;
        const double log_m = m > 0 ? std::log(m) : -kInf;
        out.divergence +=
            beta * xlog_ratio(p, log_p[k], log_m) + (1 - beta) * xlog_ratio(q, log_q[k], log_m);
        out.u[k] = (1 - beta) * xlog_ratio(q, log_q[k], log_m);
        break;
      }
      case 3: {  // KL(p || beta p + (1 - beta) q)
        const double m = beta * p + (1 - beta) * q;
        const double log_m = m > 0 ? std::log(m) : -kInf;
        out.divergence += xlog_ratio(p, log_p[k], log_m);
        out.u[k] = m > 0 ? -(1 - beta) * p * q / m : 0.0;
        break;
      }
      case 4: {  // KL(q || beta q + (1 - beta) p)
        const double m = beta * q + (1 - beta) * p;
        const double log_m = m > 0 ? std::log(m) : -kInf;
        out.divergence += xlog_ratio(q, log_q[k], log_m);
        out.u[k] = m > 0 ? xlog_ratio(q, log_q[k], log_m) - beta * q * q / m : 0.0;
        break;
      }
      default:  // 1/2 sum |p - q|
        out.divergence += 0.5 * std::fabs(p - q);
        out.u[k] = q > p ? 0.5 * q : (p > q ? -0.5 * q : 0.0);
    }
  }
  return out;
}

inline bool row_max_finite(const Row& x) {
  double mx = -kInf;
  for (double v : x) {
    if (std::isnan(v)) return false;
    mx = std::max(mx, v);
  }
  return std::isfinite(mx);
}

// ce_weight (softmax(s) - onehot(y)) added to grad, ce_weight CE(s, y) to the loss.
inline void add_cross_entropy(FlkdRowRef& out, const Row& s, int64_t label, double ce_weight) {
  const Row log_sm = log_softmax_ref(s, 1.0);
  out.loss += ce_weight * -log_sm[label];
  for (size_t k = 0; k < s.size(); ++k) {
    out.grad[k] += ce_weight * (std::exp(log_sm[k]) - (int64_t(k) == label ? 1.0 : 0.0));
  }
}

// One row against teacher logits t.
inline FlkdRowRef flkd_row_reference(const Row& s, const Row& t, int64_t label, double tau,
                                     const FlkdOptionsRef& o) {
  const int64_t classes = static_cast<int64_t>(s.size());
  if (label == o.ignore_index) return {0.0, Row(classes, 0.0)};
  if (!row_max_finite(s) || !row_max_finite(t)) return {kNaN, Row(classes, kNaN)};
  const bool label_used = label >= 0;
  Row log_p = log_softmax_ref(t, tau);
  if (label_used && o.ka != 0) {
    const int64_t j = first_argmax(t);
    if (j != label && o.ka == 1) std::swap(log_p[j], log_p[label]);
    if (j != label && o.ka == 2) {
      const double off = classes > 1 ? (1.0 - o.lsr_p) / double(classes - 1) : 0.0;
      for (int64_t k = 0; k < classes; ++k) {
        log_p[k] = k == label ? std::log(o.lsr_p) : (off > 0 ? std::log(off) : -kInf);
      }
    }
  }
  const Row log_q = log_softmax_ref(s, tau);
  const BucketTerms terms = bucket_terms(log_p, log_q, o.divergence, o.beta);
  double g_bar = 0.0;
  for (double u : terms.u) g_bar += u;
  const double scale = o.scale_tau2 ? tau * tau : 1.0;
  FlkdRowRef out{scale * terms.divergence, Row(classes)};
  for (int64_t k = 0; k < classes; ++k) {
    out.grad[k] = scale / tau * (terms.u[k] - std::exp(log_q[k]) * g_bar);
  }
  if (label_used && o.ce_weight != 0.0) add_cross_entropy(out, s, label, o.ce_weight);
  return out;
}

// One row against a top-k teacher: listed ids and their log-probabilities at temperature 1.
// The teacher's buckets at tau are the maximum-entropy completion raised to 1/tau (§5.5.2):
// listed id i ~ exp(lp_i / tau), tail ~ (V - K) (r / (V - K))^(1/tau), r = 1 - sum exp(lp).
inline FlkdRowRef flkd_topk_row_reference(const Row& s, const std::vector<int64_t>& ids,
                                          const Row& logprobs, int64_t label, double tau,
                                          const FlkdOptionsRef& o) {
  const int64_t classes = static_cast<int64_t>(s.size());
  const int64_t kk = static_cast<int64_t>(ids.size());
  if (label == o.ignore_index) return {0.0, Row(classes, 0.0)};
  double listed = 0.0;
  bool bad = !row_max_finite(s);
  for (double lp : logprobs) {
    bad = bad || std::isnan(lp) || lp == kInf;
    listed += std::exp(lp);
  }
  if (bad) return {kNaN, Row(classes, kNaN)};
  // Buckets 0..K-1 the listed ids, K the tail.
  Row l(kk + 1);
  for (int64_t i = 0; i < kk; ++i) l[i] = logprobs[i] / tau;
  const double rest = double(classes - kk), r = 1.0 - listed;
  l[kk] = (rest > 0 && r > 0) ? std::log(rest) + (std::log(r) - std::log(rest)) / tau : -kInf;
  double mx = -kInf;
  for (double v : l) mx = std::max(mx, v);
  double sum = 0.0;
  for (double v : l) sum += std::exp(v - mx);
  Row log_p(kk + 1);
  for (int64_t i = 0; i <= kk; ++i) log_p[i] = l[i] - mx - std::log(sum);

  const Row log_q_col = log_softmax_ref(s, tau);
  std::vector<char> is_listed(classes, 0);
  Row log_q(kk + 1);
  for (int64_t i = 0; i < kk; ++i) {
    log_q[i] = log_q_col[ids[i]];
    is_listed[ids[i]] = 1;
  }
  double q_tail = 0.0;
  for (int64_t k = 0; k < classes; ++k) q_tail += is_listed[k] ? 0.0 : std::exp(log_q_col[k]);
  log_q[kk] = q_tail > 0 ? std::log(q_tail) : -kInf;

  const BucketTerms terms = bucket_terms(log_p, log_q, o.divergence, o.beta);
  double g_bar = 0.0;
  for (double u : terms.u) g_bar += u;
  const double scale = o.scale_tau2 ? tau * tau : 1.0;
  const double g_tail = q_tail > 0 ? terms.u[kk] / q_tail : 0.0;
  FlkdRowRef out{scale * terms.divergence, Row(classes)};
  for (int64_t k = 0; k < classes; ++k) {
    out.grad[k] = scale / tau * (g_tail - g_bar) * std::exp(log_q_col[k]);
  }
  for (int64_t i = 0; i < kk; ++i) {
    out.grad[ids[i]] = scale / tau * (terms.u[i] - std::exp(log_q[i]) * g_bar);
  }
  if (label >= 0 && o.ce_weight != 0.0) add_cross_entropy(out, s, label, o.ce_weight);
  return out;
}

}  // namespace tskd_fast::testing
