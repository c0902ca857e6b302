// pybind11 module spear._core: the CPU kernel on numpy arrays, the CUDA kernel on raw
// device pointers (the Python layer owns CuPy arrays, so this module needs no CuPy).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <stdexcept>
#include <string>

#include "cpu/sampler_cpu.h"
#include "spear/sampler.h"
#ifdef SPEAR_WITH_CUDA
#include "cuda/sampler_cuda.h"
#endif

namespace py = pybind11;

namespace {

spear::SamplerParams make_params(int m, int b, int min_zeros, int probe, int probe_min,
                                 uint64_t seed) {
  if (b < 1) throw std::invalid_argument("batch size b must be >= 1");
  if (m < b - 1) throw std::invalid_argument("L needs at least b-1 rows");
  spear::SamplerParams p;
  p.m = m;
  p.b = b;
  p.min_zeros = min_zeros;
  p.probe = probe;
  p.probe_min = probe_min;
  p.seed = seed;
  return p;
}

template <typename T>
py::tuple sample_cpu_typed(const py::array& L_obj, const py::array& thresh_obj, uint64_t seed,
                           uint64_t offset, int64_t num_samples, int min_zeros, int probe,
                           int probe_min, int64_t max_candidates, int num_threads) {
  // The Python layer validates and converts; here we only insist on the exact layout.
  auto L = py::array_t<T, py::array::c_style>::ensure(L_obj);
  auto thresh = py::array_t<T, py::array::c_style>::ensure(thresh_obj);
  if (!L || L.ndim() != 2) throw std::invalid_argument("L must be a 2-D C-contiguous array");
  if (!thresh || thresh.ndim() != 1 || thresh.shape(0) != L.shape(0))
    throw std::invalid_argument("thresh must have one entry per row of L");
  const auto params = make_params(static_cast<int>(L.shape(0)), static_cast<int>(L.shape(1)),
                                  min_zeros, probe, probe_min, seed);
  spear::SampleResult<T> r;
  {
    py::gil_scoped_release release;
    r = spear::cpu::sample<T>(L.data(), thresh.data(), params, offset, num_samples,
                              max_candidates, num_threads);
  }
  const auto count = static_cast<py::ssize_t>(r.index.size());
  py::array_t<T> q({count, static_cast<py::ssize_t>(params.b)});
  py::array_t<int32_t> zeros(count);
  py::array_t<int64_t> index(count);
  std::copy(r.q.begin(), r.q.end(), q.mutable_data());
  std::copy(r.zeros.begin(), r.zeros.end(), zeros.mutable_data());
  std::copy(r.index.begin(), r.index.end(), index.mutable_data());
  return py::make_tuple(q, zeros, index, r.evaluated, r.accepted_total);
}

py::tuple sample_cpu(const py::array& L, const py::array& thresh, uint64_t seed, uint64_t offset,
                     int64_t num_samples, int min_zeros, int probe, int probe_min,
                     int64_t max_candidates, int num_threads) {
  if (num_samples < 0) throw std::invalid_argument("num_samples must be >= 0");
  if (L.dtype().is(py::dtype::of<double>()))
    return sample_cpu_typed<double>(L, thresh, seed, offset, num_samples, min_zeros, probe,
                                    probe_min, max_candidates, num_threads);
  if (L.dtype().is(py::dtype::of<float>()))
    return sample_cpu_typed<float>(L, thresh, seed, offset, num_samples, min_zeros, probe,
                                   probe_min, max_candidates, num_threads);
  throw py::type_error("L must be float32 or float64");
}

#ifdef SPEAR_WITH_CUDA
void sample_cuda(uintptr_t L, uintptr_t thresh, const std::string& dtype, int m, int b,
                 uint64_t seed, uint64_t offset, int64_t num_samples, int min_zeros, int probe,
                 int probe_min, uintptr_t out_q, uintptr_t out_zeros, uintptr_t out_index,
                 uintptr_t count, int64_t capacity, uintptr_t stream) {
  const auto params = make_params(m, b, min_zeros, probe, probe_min, seed);
  py::gil_scoped_release release;
  auto* z = reinterpret_cast<int32_t*>(out_zeros);
  auto* idx = reinterpret_cast<int64_t*>(out_index);
  auto* cnt = reinterpret_cast<unsigned long long*>(count);
  if (dtype == "float64")
    spear::cuda::sample<double>(reinterpret_cast<const double*>(L),
                                reinterpret_cast<const double*>(thresh), params, offset,
                                num_samples, reinterpret_cast<double*>(out_q), z, idx, cnt,
                                capacity, stream);
  else if (dtype == "float32")
    spear::cuda::sample<float>(reinterpret_cast<const float*>(L),
                               reinterpret_cast<const float*>(thresh), params, offset,
                               num_samples, reinterpret_cast<float*>(out_q), z, idx, cnt,
                               capacity, stream);
  else
    throw py::type_error("dtype must be 'float32' or 'float64'");
}
#endif

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "SPEAR direction sampler kernels (CPU always, CUDA when built with it)";
  m.def("sample_cpu", &sample_cpu, py::arg("L"), py::arg("thresh"), py::arg("seed"),
        py::arg("offset"), py::arg("num_samples"), py::arg("min_zeros"), py::arg("probe"),
        py::arg("probe_min"), py::arg("max_candidates"), py::arg("num_threads"),
        "Evaluate samples [offset, offset+num_samples) on the CPU. Returns "
        "(q, zeros, index, evaluated, accepted_total).");
  m.def(
      "philox4x32_10",
      [](std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
        const auto r = spear::philox4x32_10(c[0], c[1], c[2], c[3], k[0], k[1]);
        return std::array<uint32_t, 4>{r.v[0], r.v[1], r.v[2], r.v[3]};
      },
      py::arg("counter"), py::arg("key"), "The generator both kernels use (for tests).");
  m.def("cpu_max_threads", &spear::cpu::max_threads, "Threads the CPU kernel uses by default.");
#ifdef SPEAR_WITH_CUDA
  m.attr("built_with_cuda") = true;
  m.attr("cuda_max_b") = spear::cuda::kMaxB;
  m.def("cuda_device_count", &spear::cuda::device_count);
  m.def("cuda_device_name", &spear::cuda::device_name, py::arg("device") = 0);
  m.def("sample_cuda", &sample_cuda, py::arg("L"), py::arg("thresh"), py::arg("dtype"),
        py::arg("m"), py::arg("b"), py::arg("seed"), py::arg("offset"), py::arg("num_samples"),
        py::arg("min_zeros"), py::arg("probe"), py::arg("probe_min"), py::arg("out_q"),
        py::arg("out_zeros"), py::arg("out_index"), py::arg("count"), py::arg("capacity"),
        py::arg("stream"),
        "Launch the CUDA sampler on device pointers (asynchronous on `stream`).");
#else
  m.attr("built_with_cuda") = false;
  m.attr("cuda_max_b") = 0;
  m.def("cuda_device_count", []() { return 0; });
#endif
}
