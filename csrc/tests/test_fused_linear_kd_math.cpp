// Host tests of the fused linear + KD row math (tskd_fast/fused_linear_kd_math.h) driven the way
// a GPU thread drives it: columns pushed one at a time into FlkdStats and parts merged in any
// split, then passes B and C through the scalar column functions. Each row's loss is checked
// against a direct double-precision computation from the definitions, and its gradient against
// central finite differences of that direct loss; the top-k buckets likewise.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "test_check.h"
#include "tskd_fast/fused_linear_kd_math.h"

namespace tskd_fast::testing {
namespace {

using Row = std::vector<double>;

struct Case {
  int64_t divergence;
  double beta;
  int64_t ka;
  double lsr_p;
  bool scale_tau2;
  double ce_weight;
  double tau;
  int64_t label;  // -100: no label used (ignore_index)
};

Row log_softmax(const Row& x, double tau) {
  double mx = -INFINITY;
  for (double v : x) mx = std::max(mx, v / tau);
  double sum = 0;
  for (double v : x) sum += std::exp(v / tau - mx);
  Row out(x.size());
  for (size_t k = 0; k < x.size(); ++k) out[k] = x[k] / tau - mx - std::log(sum);
  return out;
}

double plogq(double p, double log_a, double log_b) { return p > 0 ? p * (log_a - log_b) : 0.0; }

// D(p, q) from log-probabilities, written from the definitions.
double divergence_of(const Row& log_p, const Row& log_q, int64_t divergence, double beta) {
  double d = 0;
  for (size_t k = 0; k < log_p.size(); ++k) {
    const double p = std::exp(log_p[k]), q = std::exp(log_q[k]);
    switch (divergence) {
      case kForwardKl:
        d += plogq(p, log_p[k], log_q[k]);
        break;
      case kReverseKl:
        d += plogq(q, log_q[k], log_p[k]);
        break;
      case kJsd: {
        const double log_m = std::log(beta * p + (1 - beta) * q);
        d += beta * plogq(p, log_p[k], log_m) + (1 - beta) * plogq(q, log_q[k], log_m);
        break;
      }
      case kSkewForwardKl:
        d += plogq(p, log_p[k], std::log(beta * p + (1 - beta) * q));
        break;
      case kSkewReverseKl:
        d += plogq(q, log_q[k], std::log(beta * q + (1 - beta) * p));
        break;
      default:
        d += 0.5 * std::fabs(p - q);
    }
  }
  return d;
}

// The row's loss from the definitions: the target after knowledge adjustment, D, tau^2, CE.
double direct_loss(const Row& s, const Row& t, const Case& c) {
  const int64_t classes = static_cast<int64_t>(s.size());
  Row log_p = log_softmax(t, c.tau);
  if (c.label >= 0 && c.ka != kKaNone) {
    const int64_t j = std::max_element(t.begin(), t.end()) - t.begin();
    if (j != c.label) {
      if (c.ka == kKaProbShift) {
        std::swap(log_p[j], log_p[c.label]);
      } else {
        const double off = (1 - c.lsr_p) / double(classes - 1);
        for (int64_t k = 0; k < classes; ++k) log_p[k] = std::log(k == c.label ? c.lsr_p : off);
      }
    }
  }
  double loss = divergence_of(log_p, log_softmax(s, c.tau), c.divergence, c.beta);
  if (c.scale_tau2) loss *= c.tau * c.tau;
  if (c.label >= 0 && c.ce_weight != 0) loss -= c.ce_weight * log_softmax(s, 1.0)[c.label];
  return loss;
}

struct HeaderResult {
  double loss;
  Row grad;
};

FlkdOptions<double> options_of(const Case& c, int64_t classes) {
  return flkd_options<double>(c.divergence, c.beta, c.ka, c.lsr_p, c.scale_tau2, c.ce_weight, -100,
                              1.0, classes);
}

// Pass A pushed column by column, the row split in `parts` consecutive parts merged in order.
FlkdStats<double> pass_a(const Row& s, const Row& t, const Case& c, int parts) {
  const int64_t classes = static_cast<int64_t>(s.size());
  FlkdStats<double> total = flkd_stats_empty<double>();
  for (int part = 0; part < parts; ++part) {
    FlkdStats<double> st = flkd_stats_empty<double>();
    for (int64_t k = classes * part / parts; k < classes * (part + 1) / parts; ++k) {
      flkd_stats_push(st, s[k], t[k], k, c.divergence, 1.0 / c.tau);
    }
    total = flkd_stats_merge(total, st, c.divergence, 1.0 / c.tau);
  }
  return total;
}

HeaderResult via_header(const Row& s, const Row& t, const Case& c, int parts) {
  const int64_t classes = static_cast<int64_t>(s.size());
  const FlkdOptions<double> o = options_of(c, classes);
  const FlkdStats<double> st = pass_a(s, t, c, parts);
  FlkdRow<double> r = flkd_row_setup(st, o, c.tau, true, c.label);
  if (r.label >= 0) {
    r.s_at_label = s[r.label];
    r.t_at_label = t[r.label];
  }
  if (r.argmax >= 0) r.s_at_argmax = s[r.argmax];
  FlkdResult<double> res;
  if (flkd_needs_sums_pass(r, c.divergence)) {
    FlkdSums<double> sums{0, 0};
    for (int64_t k = 0; k < classes; ++k) {
      const FlkdTerm<double> term = flkd_term_column(r, o, k, s[k], t[k]);
      sums.loss += term.loss;
      sums.u += term.u;
    }
    res = flkd_result_of_sums(sums, c.divergence);
  } else {
    res = flkd_result_online(flkd_online_divergence(st, r, c.divergence), c.divergence);
  }
  HeaderResult out{flkd_row_loss(r, res, o), Row(classes)};
  const FlkdGradCoefs<double> coefs = flkd_grad_coefs(r, res, o);
  for (int64_t k = 0; k < classes; ++k) out.grad[k] = flkd_grad_column(r, o, coefs, k, s[k], t[k]);
  return out;
}

double finite_difference(const Row& s, int64_t k, double h, const auto& loss_of) {
  Row up = s, down = s;
  up[k] += h;
  down[k] -= h;
  return (loss_of(up) - loss_of(down)) / (2 * h);
}

void check_rows(std::mt19937& gen) {
  std::normal_distribution<double> normal(0.0, 2.0);
  const int64_t classes = 23;
  for (int64_t divergence = kForwardKl; divergence <= kTvd; ++divergence) {
    for (int64_t ka = kKaNone; ka <= kKaLabelSmooth; ++ka) {
      for (int variant = 0; variant < 3; ++variant) {
        Row s(classes), t(classes);
        for (auto& v : s) v = normal(gen);
        for (auto& v : t) v = normal(gen);
        Case c{divergence,
               0.3,
               ka,
               0.8,
               variant != 1,
               variant == 2 ? 0.6 : 0.0,
               variant == 2 ? 1.0 : 1.7,
               static_cast<int64_t>(gen() % classes)};
        if (variant == 1) c.label = std::max_element(t.begin(), t.end()) - t.begin();
        const double expected = direct_loss(s, t, c);
        for (int parts : {1, 3, 7}) {
          const HeaderResult got = via_header(s, t, c, parts);
          TSKD_CHECK_CLOSE(got.loss, expected, 1e-12 * std::max(1.0, std::fabs(expected)),
                           "loss, divergence %lld ka %lld variant %d, %d parts",
                           (long long)divergence, (long long)ka, variant, parts);
          for (int64_t k = 0; k < classes; ++k) {
            const double fd =
                finite_difference(s, k, 1e-5, [&](const Row& x) { return direct_loss(x, t, c); });
            TSKD_CHECK_CLOSE(got.grad[k], fd, 1e-7,
                             "grad[%lld], divergence %lld ka %lld variant %d", (long long)k,
                             (long long)divergence, (long long)ka, variant);
          }
        }
      }
    }
  }
}

// The merge is the same whatever the split: statistics of three parts against one pass.
void check_merge_is_associative(std::mt19937& gen) {
  std::normal_distribution<double> normal(0.0, 3.0);
  Row s(50), t(50);
  for (auto& v : s) v = normal(gen);
  for (auto& v : t) v = normal(gen);
  t[10] = t[40] = 9.0;  // a tie: the first column wins, as torch.argmax
  for (int64_t divergence : {kForwardKl, kReverseKl}) {
    const Case c{divergence, 0.5, kKaNone, 0.9, true, 0.0, 0.7, -100};
    const FlkdStats<double> one = pass_a(s, t, c, 1), many = pass_a(s, t, c, 6);
    TSKD_CHECK_CLOSE(many.s_sum, one.s_sum, 1e-12 * one.s_sum, "s_sum");
    TSKD_CHECK_CLOSE(many.t_sum, one.t_sum, 1e-12 * one.t_sum, "t_sum");
    TSKD_CHECK_CLOSE(many.cross, one.cross, 1e-11 * std::fabs(one.cross), "cross");
    TSKD_CHECK(many.t_argmax == 10 && one.t_argmax == 10, "argmax %lld / %lld",
               (long long)many.t_argmax, (long long)one.t_argmax);
  }
}

// A top-k row: the listed ids and the tail from the definitions (the teacher's tail spread over
// the V - K other ids, tempered), against the header's bucket functions.
double direct_topk_loss(const Row& s, const std::vector<int64_t>& ids, const Row& lp,
                        const Case& c) {
  const int64_t classes = static_cast<int64_t>(s.size()), k = static_cast<int64_t>(ids.size());
  double listed = 0;
  for (double v : lp) listed += std::exp(v);
  Row full(classes, std::log((1 - listed) / double(classes - k)));
  for (int64_t i = 0; i < k; ++i) full[ids[i]] = lp[i];
  const Row log_p_full = log_softmax(full, c.tau), log_q_full = log_softmax(s, c.tau);
  Row log_p(k + 1), log_q(k + 1);
  double p_tail = 0, q_tail = 0;
  std::vector<bool> is_listed(classes, false);
  for (int64_t i = 0; i < k; ++i) {
    log_p[i] = log_p_full[ids[i]];
    log_q[i] = log_q_full[ids[i]];
    is_listed[ids[i]] = true;
  }
  for (int64_t j = 0; j < classes; ++j) {
    if (!is_listed[j]) {
      p_tail += std::exp(log_p_full[j]);
      q_tail += std::exp(log_q_full[j]);
    }
  }
  log_p[k] = std::log(p_tail);
  log_q[k] = std::log(q_tail);
  double loss = divergence_of(log_p, log_q, c.divergence, c.beta) * c.tau * c.tau;
  if (c.ce_weight != 0) loss -= c.ce_weight * log_softmax(s, 1.0)[c.label];
  return loss;
}

void check_topk(std::mt19937& gen) {
  std::normal_distribution<double> normal(0.0, 2.0);
  const int64_t classes = 19, k = 4;
  for (int64_t divergence = kForwardKl; divergence <= kTvd; ++divergence) {
    Row s(classes), t(classes);
    for (auto& v : s) v = normal(gen);
    for (auto& v : t) v = normal(gen);
    const Row log_t = log_softmax(t, 1.0);
    std::vector<int64_t> order(classes);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int64_t a, int64_t b) { return log_t[a] > log_t[b]; });
    const std::vector<int64_t> ids(order.begin(), order.begin() + k);
    Row lp(k);
    for (int64_t i = 0; i < k; ++i) lp[i] = log_t[ids[i]];
    const Case c{divergence, 0.4, kKaNone, 0.9, true, 0.5, 1.6, ids[1]};
    const FlkdOptions<double> o = options_of(c, classes);
    // Pass A over the tail only (the kernels mask the listed columns), then the listed logits.
    FlkdStats<double> st = flkd_stats_empty<double>();
    for (int64_t j = 0; j < classes; ++j) {
      const bool listed = std::find(ids.begin(), ids.end(), j) != ids.end();
      const double ninf = -INFINITY;
      flkd_stats_push(st, listed ? ninf : s[j], ninf, j, int64_t(kJsd), 1.0 / c.tau);
    }
    Row s_ids(k);
    for (int64_t i = 0; i < k; ++i) s_ids[i] = s[ids[i]];
    const double tail_sum = flkd_topk_student(st, s_ids.data(), k, 1.0 / c.tau, true);
    FlkdTopkRow<double> tk{};
    FlkdRow<double> r = flkd_topk_setup(tk, st, o, lp.data(), k, c.tau, true, c.label);
    r.s_at_label = s[c.label];
    FlkdSums<double> sums{0, 0};
    for (int64_t i = 0; i < k; ++i) {
      const FlkdTerm<double> term = flkd_topk_listed_term(tk, r, o, lp[i], s_ids[i]);
      sums.loss += term.loss;
      sums.u += term.u;
    }
    const FlkdTerm<double> tail = flkd_topk_tail_term(tk, r, o, tail_sum);
    sums.loss += tail.loss;
    sums.u += tail.u;
    const FlkdResult<double> res = flkd_result_of_sums(sums, divergence);
    const double expected = direct_topk_loss(s, ids, lp, c);
    TSKD_CHECK_CLOSE(flkd_row_loss(r, res, o), expected, 1e-12 * std::max(1.0, std::fabs(expected)),
                     "top-k loss, divergence %lld", (long long)divergence);
    const FlkdGradCoefs<double> coefs = flkd_grad_coefs(r, res, o);
    const double tail_coef = flkd_topk_tail_coef(tk, coefs);
    for (int64_t j = 0; j < classes; ++j) {
      const auto at = std::find(ids.begin(), ids.end(), j);
      double g;
      if (at != ids.end()) {
        g = flkd_topk_listed_grad(tk, r, o, coefs, lp[at - ids.begin()], s[j]);
      } else {
        g = tail_coef * std::exp(flkd_log_q(r, s[j])) +
            coefs.ce * std::exp(s[j] - r.s_max - r.ce_logz);
      }
      if (j == c.label) g = flkd_grad_label(coefs, g);
      const double fd = finite_difference(
          s, j, 1e-5, [&](const Row& x) { return direct_topk_loss(x, ids, lp, c); });
      TSKD_CHECK_CLOSE(g, fd, 1e-7, "top-k grad[%lld], divergence %lld", (long long)j,
                       (long long)divergence);
    }
  }
}

}  // namespace
}  // namespace tskd_fast::testing

int main() {
  std::mt19937 gen(7);
  tskd_fast::testing::check_rows(gen);
  tskd_fast::testing::check_merge_is_associative(gen);
  tskd_fast::testing::check_topk(gen);
  const int failed = tskd_fast::testing::failures();
  std::printf("test_fused_linear_kd_math: %s (%d failed checks)\n", failed ? "FAILED" : "ok",
              failed);
  return failed == 0 ? 0 : 1;
}
