// CPU row kernels of the closed-form pointwise divergences (kl, rkl, js, tv, hellinger, chi2, neyman_chi2):
// per-row values and the gradient with respect to the student's logits. Each kernel is an optimisation of its
// member's `_pointwise` (divergence_lab/divergences/named.py, the definition), written after the member's
// `_fused` closed form; tests/divergences/test_row_kernels.py pins every kernel to `_pointwise`
// (test_kernel_values_and_gradients_equal_plain_autograd) and to `_fused`
// (test_kernel_equals_the_closed_form_in_float64). Each row is read once from memory and then worked on
// in cache (two passes for the two log-normalisers, one or two for value and gradient), the gradient is
// written once, and nothing of size (N, C) is allocated. The exponentials of the normaliser passes are kept
// in two rows of the thread's own, so probabilities are a product, not a second exp: an element costs two
// exp (js: and one log; hellinger: two square roots), the least the math allows. Vectorised with ATen's
// Vectorized<T> (SLEEF exp and log), rows in parallel over torch's intra-op threads.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/cpu/vec/functional.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using at::vec::Vectorized;

enum Kind { KL = 0, RKL = 1, JS = 2, TV = 3, HELLINGER = 4, CHI2 = 5, NEYMAN_CHI2 = 6 };

template <typename T>
struct Row {
  const T* a;  // student logits
  const T* b;  // teacher logits
  T* g;        // gradient of the value with respect to the scaled student logits (nullptr: not needed)
  int64_t n;
  T scale;     // 1 / T: the kernel works on a = student / T and b = teacher / T, and the written gradient
               // carries this factor too, so that it is with respect to the raw logits
  T* ea;       // exp(a − max a) and exp(b − max b): rows of this thread's own, filled by log_normaliser
  T* eb;
  T parameter; // the member's parameter (chi2, neyman_chi2: min_prob, the floor of the denominator)
};

template <typename T, typename F>
inline void for_each(int64_t n, F body) {
  using V = Vectorized<T>;
  const int64_t step = V::size();
  int64_t k = 0;
  for (; k + step <= n; k += step) body(k, step);
  if (k < n) body(k, n - k);
}

template <typename T>
inline Vectorized<T> load(const T* p, int64_t count) {
  using V = Vectorized<T>;
  return count == V::size() ? V::loadu(p) : V::loadu(p, count);
}

template <typename T>
inline void store(const Vectorized<T>& v, T* p, int64_t count) {
  if (count == Vectorized<T>::size()) {
    v.store(p);
  } else {
    v.store(p, count);
  }
}

// Vector lanes beyond `count` hold a value that does not change a sum.
template <typename T>
inline Vectorized<T> masked(const Vectorized<T>& v, int64_t count, T fill) {
  using V = Vectorized<T>;
  if (count == V::size()) return v;
  T buffer[V::size()];
  v.store(buffer);
  for (int64_t j = count; j < V::size(); ++j) buffer[j] = fill;
  return V::loadu(buffer);
}

template <typename T>
inline T max_lanes(const Vectorized<T>& v) {
  return at::vec::vec_reduce_all<T>([](Vectorized<T>& x, Vectorized<T>& y) { return at::vec::maximum(x, y); }, v);
}

// A row sum with float64-like accuracy in float32: vector lanes add into a block partial, every
// kBlockAdds adds the partial joins a compensated (Kahan) total. Summing 32 000 terms lane by lane would
// accumulate about 4 000 roundings per lane; this keeps the error near that of ATen's cascade sums.
template <typename T>
struct RowSum {
  static constexpr int kBlockAdds = 16;
  Vectorized<T> block{T(0)}, total{T(0)}, compensation{T(0)};
  int adds = 0;
  inline void add(const Vectorized<T>& x) {
    block += x;
    if (++adds == kBlockAdds) flush();
  }
  inline void flush() {
    const Vectorized<T> y = block - compensation;
    const Vectorized<T> t = total + y;
    compensation = (t - total) - y;
    total = t;
    block = Vectorized<T>(T(0));
    adds = 0;
  }
  inline T result() {
    flush();
    T lanes[Vectorized<T>::size()];
    total.store(lanes);
    T sum = T(0), c = T(0);
    for (int j = 0; j < Vectorized<T>::size(); ++j) {
      const T y = lanes[j] - c;
      const T t = sum + y;
      c = (t - sum) - y;
      sum = t;
    }
    return sum;
  }
};

// The log-normaliser of x * scale over a row, as its two parts: the maximum m and log Σ exp(x * scale − m).
// They are kept apart so that a log-probability is (x * scale − m) − log Σ, as in log_softmax: folding them
// into one number first would lose the low digits of log Σ next to a large m (float32 logits of 1e4).
// The exponentials exp(x * scale − m) are written to e: a probability is then e / Σ.
template <typename T>
struct Normaliser {
  T shift;
  T log_sum;
  T inverse_sum;
};

template <typename T>
inline Normaliser<T> log_normaliser(const T* x, int64_t n, T scale, T* e) {
  using V = Vectorized<T>;
  const T lowest = -std::numeric_limits<T>::infinity();
  V top(lowest);
  for_each<T>(n, [&](int64_t k, int64_t c) { top = at::vec::maximum(top, masked(load(x + k, c), c, lowest)); });
  const T m = max_lanes(top) * scale;
  RowSum<T> total;
  const V s(scale), shift(m);
  for_each<T>(n, [&](int64_t k, int64_t c) {
    const V ex = (load(x + k, c) * s - shift).exp();
    store(ex, e + k, c);
    total.add(masked(ex, c, T(0)));
  });
  const T sum = total.result();
  return {m, std::log(sum), T(1) / sum};
}

// log-probabilities of one vector of a row, (x * scale − m) − log Σ, and probabilities, e / Σ
template <typename T>
struct LogProb {
  Vectorized<T> scale, shift, log_sum, inverse_sum;
  T inverse;  // 1 / Σ
  LogProb(T s, const Normaliser<T>& z)
      : scale(s), shift(z.shift), log_sum(z.log_sum), inverse_sum(z.inverse_sum), inverse(z.inverse_sum) {}
  inline Vectorized<T> operator()(const T* x, int64_t k, int64_t c) const {
    return (load(x + k, c) * scale - shift) - log_sum;
  }
  inline Vectorized<T> prob(const T* e, int64_t k, int64_t c) const { return load(e + k, c) * inverse_sum; }
};

// The gradient pass of a member whose ∂value/∂q = g is already in r.g: through log_softmax,
// ∂/∂a = q (g − ⟨q, g⟩), scaled by 1/T.
template <typename T>
void through_softmax(const Row<T>& r, const LogProb<T>& la, T q_dot_g) {
  using V = Vectorized<T>;
  const V dot(q_dot_g), o(r.scale);
  for_each<T>(r.n, [&](int64_t k, int64_t c) {
    store(la.prob(r.ea, k, c) * (load(r.g + k, c) - dot) * o, r.g + k, c);
  });
}

template <typename T>
T kl_row(const Row<T>& r, const LogProb<T>& la, const LogProb<T>& lb) {
  // An optimisation of ForwardKL._pointwise (kl), pinned as above.
  // value = Σ p (log p − log q);  ∂/∂a = q − p
  using V = Vectorized<T>;
  const V o(r.scale);
  RowSum<T> value;
  for_each<T>(r.n, [&](int64_t k, int64_t c) {
    const V p = lb.prob(r.eb, k, c);
    value.add(masked(p * (lb(r.b, k, c) - la(r.a, k, c)), c, T(0)));
    if (r.g) store((la.prob(r.ea, k, c) - p) * o, r.g + k, c);
  });
  return value.result();
}

template <typename T>
T rkl_row(const Row<T>& r, const LogProb<T>& la, const LogProb<T>& lb) {
  // An optimisation of ReverseKL._pointwise (rkl), pinned as above.
  // value = Σ q (log q − log p);  ∂/∂a = q (log q − log p − value)
  using V = Vectorized<T>;
  RowSum<T> value;
  for_each<T>(r.n, [&](int64_t k, int64_t c) {
    value.add(masked(la.prob(r.ea, k, c) * (la(r.a, k, c) - lb(r.b, k, c)), c, T(0)));
  });
  const T v = value.result();
  if (r.g) {
    const V vv(v), o(r.scale);
    for_each<T>(r.n, [&](int64_t k, int64_t c) {
      const V ratio = la(r.a, k, c) - lb(r.b, k, c);
      store(la.prob(r.ea, k, c) * (ratio - vv) * o, r.g + k, c);
    });
  }
  return v;
}

template <typename T>
T js_row(const Row<T>& r, const LogProb<T>& la, const LogProb<T>& lb) {
  // An optimisation of JensenShannon._pointwise (js), pinned as above.
  // m = (p + q) / 2, g = (log q − log m) / 2, h = (log p − log m) / 2;
  // value = Σ q g + Σ p h;  ∂/∂a = q (g − ⟨q, g⟩)
  using V = Vectorized<T>;
  const V half(T(0.5)), tiny(std::numeric_limits<T>::min());
  RowSum<T> value, q_dot_g;
  for_each<T>(r.n, [&](int64_t k, int64_t c) {
    const V log_q = la(r.a, k, c);
    const V log_p = lb(r.b, k, c);
    const V q = la.prob(r.ea, k, c), p = lb.prob(r.eb, k, c);
    const V log_m = at::vec::maximum((p + q) * half, tiny).log();
    const V g = (log_q - log_m) * half;
    const V qg = masked(q * g, c, T(0));
    value.add(qg + masked(p * ((log_p - log_m) * half), c, T(0)));
    q_dot_g.add(qg);
    if (r.g) store(g, r.g + k, c);
  });
  if (r.g) through_softmax(r, la, q_dot_g.result());
  return value.result();
}

template <typename T>
T tv_row(const Row<T>& r, const LogProb<T>& la, const LogProb<T>& lb) {
  // An optimisation of TotalVariation._pointwise (tv), pinned as above.
  // value = ½ Σ |p − q|;  with σ = sign(p − q): ∂/∂a = q (−σ/2 + ⟨q, σ⟩/2)
  using V = Vectorized<T>;
  const V half(T(0.5)), zero(T(0)), one(T(1));
  RowSum<T> value, q_dot_sign;
  for_each<T>(r.n, [&](int64_t k, int64_t c) {
    const V q = la.prob(r.ea, k, c);
    const V d = lb.prob(r.eb, k, c) - q;
    const V sign = V::blendv(zero, one, d > zero) - V::blendv(zero, one, d < zero);
    value.add(masked(d.abs(), c, T(0)));
    q_dot_sign.add(masked(q * sign, c, T(0)));
    if (r.g) store(q * (zero - sign * half), r.g + k, c);
  });
  if (r.g) {
    const V correction(q_dot_sign.result() * T(0.5)), o(r.scale);
    for_each<T>(r.n, [&](int64_t k, int64_t c) {
      store((load(r.g + k, c) + la.prob(r.ea, k, c) * correction) * o, r.g + k, c);
    });
  }
  return value.result() * T(0.5);
}

template <typename T>
T hellinger_row(const Row<T>& r, const LogProb<T>& la, const LogProb<T>& lb) {
  // An optimisation of Hellinger._pointwise (hellinger), pinned as above.
  // root = √(p q) = √e_a √e_b √(1/Σ_a Σ_b), BC = Σ root, value = max(0, −expm1(log BC));
  // ∂/∂a = −½ (root − q BC) where value > 0. (√e_a √e_b: no underflow of the product e_a e_b.)
  using V = Vectorized<T>;
  const V root_scale(std::sqrt(la.inverse * lb.inverse));
  RowSum<T> bc;
  for_each<T>(r.n, [&](int64_t k, int64_t c) {
    bc.add(masked(load(r.ea + k, c).sqrt() * load(r.eb + k, c).sqrt() * root_scale, c, T(0)));
  });
  const T total = bc.result();
  const T value = std::max(T(0), -std::expm1(std::log(total)));
  if (r.g) {
    const V active(value > T(0) ? T(-0.5) * r.scale : T(0)), bcv(total);
    for_each<T>(r.n, [&](int64_t k, int64_t c) {
      const V root = load(r.ea + k, c).sqrt() * load(r.eb + k, c).sqrt() * root_scale;
      store((root - la.prob(r.ea, k, c) * bcv) * active, r.g + k, c);
    });
  }
  return value;
}

// An optimisation of PearsonChi2._pointwise (chi2, `clamp_q`) or NeymanChi2._pointwise (neyman_chi2), pinned
// as above. Pearson χ² (q in the denominator, `clamp_q`) or Neyman χ² (p in the denominator): with d = max(·, ε) and
// t = (p − q) / d, value = Σ t (p − q). ∂value/∂q: Pearson 1 − (p/d)² where q ≥ ε, else −2t (clamped, no
// gradient through the denominator, as clamp_min); Neyman −2t. ∂/∂a = q (g − ⟨q, g⟩).
template <typename T>
T chi2_row(const Row<T>& r, const LogProb<T>& la, const LogProb<T>& lb, bool clamp_q) {
  using V = Vectorized<T>;
  const V eps(r.parameter), one(T(1)), minus_two(T(-2));
  RowSum<T> value, q_dot_g;
  for_each<T>(r.n, [&](int64_t k, int64_t c) {
    const V q = la.prob(r.ea, k, c), p = lb.prob(r.eb, k, c);
    const V d = at::vec::maximum(clamp_q ? q : p, eps);
    const V difference = p - q;
    const V t = difference / d;
    value.add(masked(t * difference, c, T(0)));
    V g = t * minus_two;
    if (clamp_q) {
      const V ratio = p / d;
      g = V::blendv(g, one - ratio * ratio, q >= eps);
    }
    q_dot_g.add(masked(q * g, c, T(0)));
    if (r.g) store(g, r.g + k, c);
  });
  if (r.g) through_softmax(r, la, q_dot_g.result());
  return value.result();
}

template <typename T>
void rows(const at::Tensor& student, const at::Tensor& teacher, double temperature, int64_t kind,
          double parameter, at::Tensor& values, at::Tensor* grad) {
  const int64_t n = student.size(0), c = student.size(1);
  const T* a = student.data_ptr<T>();
  const T* b = teacher.data_ptr<T>();
  T* v = values.data_ptr<T>();
  T* g = grad ? grad->data_ptr<T>() : nullptr;
  const T scale = T(1.0 / temperature);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> exps(2 * c);
    for (int64_t i = begin; i < end; ++i) {
      const Row<T> r{a + i * c, b + i * c, g ? g + i * c : nullptr, c, scale, exps.data(), exps.data() + c,
                     T(parameter)};
      const LogProb<T> la(scale, log_normaliser(r.a, c, scale, r.ea));
      const LogProb<T> lb(scale, log_normaliser(r.b, c, scale, r.eb));
      switch (kind) {
        case KL: v[i] = kl_row(r, la, lb); break;
        case RKL: v[i] = rkl_row(r, la, lb); break;
        case JS: v[i] = js_row(r, la, lb); break;
        case TV: v[i] = tv_row(r, la, lb); break;
        case HELLINGER: v[i] = hellinger_row(r, la, lb); break;
        case CHI2: v[i] = chi2_row(r, la, lb, true); break;
        default: v[i] = chi2_row(r, la, lb, false); break;
      }
    }
  });
}

}  // namespace

// Values (N,) of the member `kind` (with its `parameter`, where it has one) on (student / T, teacher / T)
// and, if `grad` is given, ∂value/∂student written into it (N, C).
at::Tensor fused_rows(const at::Tensor& student, const at::Tensor& teacher, double temperature, int64_t kind,
                      double parameter, c10::optional<at::Tensor> grad) {
  TORCH_CHECK(student.is_cpu() && teacher.is_cpu(), "fused_rows: CPU tensors only");
  TORCH_CHECK(student.dim() == 2 && student.sizes() == teacher.sizes(), "fused_rows: two (N, C) tensors");
  TORCH_CHECK(student.is_contiguous() && teacher.is_contiguous(), "fused_rows: contiguous tensors only");
  TORCH_CHECK(student.scalar_type() == teacher.scalar_type(), "fused_rows: one dtype");
  TORCH_CHECK(kind >= KL && kind <= NEYMAN_CHI2, "fused_rows: unknown kind");
  at::Tensor values = at::empty({student.size(0)}, student.options());
  at::Tensor* out = nullptr;
  if (grad.has_value() && grad->defined()) {
    TORCH_CHECK(grad->sizes() == student.sizes() && grad->is_contiguous() &&
                grad->scalar_type() == student.scalar_type(), "fused_rows: grad must match student");
    out = &grad.value();
  }
  AT_DISPATCH_FLOATING_TYPES(student.scalar_type(), "fused_rows", [&] {
    rows<scalar_t>(student, teacher, temperature, kind, parameter, values, out);
  });
  return values;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fused_rows", &fused_rows, "closed-form pointwise divergence rows");
}
