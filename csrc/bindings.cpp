// pybind11 module spear._core: the CPU kernel on numpy arrays, the CUDA kernel on device
// arrays given through __cuda_array_interface__ (CuPy, torch, ...: this module needs
// neither). Every entry point checks its arguments (sizes, dtypes, shapes, ranges) and
// raises before releasing the GIL: bad input is a Python exception, never a crash.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/cuda_emulation.h"
#include "cpu/sampler_cpu.h"
#include "spear/sampler.h"
#ifdef SPEAR_WITH_CUDA
#include "cuda/sampler_cuda.h"
#endif

namespace py = pybind11;

namespace {

[[noreturn]] void bad(const std::string& what) { throw py::value_error(what); }

// Checks every scalar parameter of a run; names the one that is wrong.
spear::SamplerParams make_params(int64_t m, int64_t b, uint64_t seed, uint64_t offset,
                                 int64_t num_samples, int64_t min_zeros, int64_t probe,
                                 int64_t probe_min) {
  if (b < 1) bad("L must have at least one column (b >= 1)");
  if (m < b - 1) bad("L needs at least b-1 rows, got shape (" + std::to_string(m) + ", " +
                     std::to_string(b) + ")");
  if (m > std::numeric_limits<int>::max() / 2 || b > 4096)
    bad("L is too large for the sampler (m < 2^30 rows, b <= 4096 columns)");
  if (num_samples < 0) bad("num_samples must be >= 0, got " + std::to_string(num_samples));
  if (offset > std::numeric_limits<uint64_t>::max() - static_cast<uint64_t>(num_samples))
    bad("offset + num_samples must stay below 2^64");
  if (min_zeros < 0 || min_zeros > m)
    bad("min_zeros must be in [0, m] = [0, " + std::to_string(m) + "], got " +
        std::to_string(min_zeros));
  if (probe < 0) bad("probe must be >= 0 (0 disables the early test), got " + std::to_string(probe));
  if (probe_min < 0 || probe_min > m)
    bad("probe_min must be in [0, m], got " + std::to_string(probe_min));
  spear::SamplerParams p;
  p.m = static_cast<int>(m);
  p.b = static_cast<int>(b);
  p.min_zeros = static_cast<int>(min_zeros);
  p.probe = static_cast<int>(probe < m ? probe : m);
  p.probe_min = static_cast<int>(probe_min);
  p.seed = seed;
  return p;
}

template <typename T>
struct HostInput {
  py::array_t<T, py::array::c_style> L, thresh;
};

// L (m x b) and thresh (m) of dtype T, C-contiguous (copied when not), finite thresholds.
template <typename T>
HostInput<T> host_input(const py::array& L_obj, const py::array& thresh_obj) {
  if (L_obj.ndim() != 2)
    bad("L must be a 2-D array (m x b), got " + std::to_string(L_obj.ndim()) + " dimensions");
  if (!thresh_obj.dtype().is(L_obj.dtype()))
    throw py::type_error("thresh must have L's dtype");
  HostInput<T> in{py::array_t<T, py::array::c_style>::ensure(L_obj),
                  py::array_t<T, py::array::c_style>::ensure(thresh_obj)};
  if (!in.L || !in.thresh) throw py::type_error("L and thresh must be float32 or float64 arrays");
  if (in.thresh.ndim() != 1 || in.thresh.shape(0) != in.L.shape(0))
    bad("thresh must have one entry per row of L (shape (" + std::to_string(in.L.shape(0)) + ",))");
  return in;
}

template <typename T>
py::tuple to_python(const spear::SampleResult<T>& r, int b) {
  const auto count = static_cast<py::ssize_t>(r.index.size());
  py::array_t<T> q({count, static_cast<py::ssize_t>(b)});
  py::array_t<int32_t> zeros(count);
  py::array_t<int64_t> index(count);
  std::copy(r.q.begin(), r.q.end(), q.mutable_data());
  std::copy(r.zeros.begin(), r.zeros.end(), zeros.mutable_data());
  std::copy(r.index.begin(), r.index.end(), index.mutable_data());
  return py::make_tuple(q, zeros, index, r.evaluated, r.accepted_total);
}

template <typename T>
py::tuple sample_cpu_typed(const py::array& L_obj, const py::array& thresh_obj, uint64_t seed,
                           uint64_t offset, int64_t num_samples, int64_t min_zeros, int64_t probe,
                           int64_t probe_min, int64_t max_candidates, int64_t num_threads) {
  auto in = host_input<T>(L_obj, thresh_obj);
  const auto params = make_params(in.L.shape(0), in.L.shape(1), seed, offset, num_samples,
                                  min_zeros, probe, probe_min);
  if (max_candidates < 0) bad("max_candidates must be >= 0");
  if (num_threads < 0 || num_threads > 4096)
    bad("num_threads must be in [0, 4096] (0: all cores), got " + std::to_string(num_threads));
  spear::SampleResult<T> r;
  {
    py::gil_scoped_release release;
    r = spear::cpu::sample<T>(in.L.data(), in.thresh.data(), params, offset, num_samples,
                              max_candidates, static_cast<int>(num_threads));
  }
  return to_python(r, params.b);
}

py::tuple sample_cpu(const py::array& L, const py::array& thresh, uint64_t seed, uint64_t offset,
                     int64_t num_samples, int64_t min_zeros, int64_t probe, int64_t probe_min,
                     int64_t max_candidates, int64_t num_threads) {
  if (L.dtype().is(py::dtype::of<double>()))
    return sample_cpu_typed<double>(L, thresh, seed, offset, num_samples, min_zeros, probe,
                                    probe_min, max_candidates, num_threads);
  if (L.dtype().is(py::dtype::of<float>()))
    return sample_cpu_typed<float>(L, thresh, seed, offset, num_samples, min_zeros, probe,
                                   probe_min, max_candidates, num_threads);
  throw py::type_error("L must be float32 or float64");
}

template <typename T>
py::tuple emulate_typed(const py::array& L_obj, const py::array& thresh_obj, uint64_t seed,
                        uint64_t offset, int64_t num_samples, int64_t min_zeros, int64_t probe,
                        int64_t probe_min, int64_t max_candidates, int64_t grid,
                        int64_t chunk_tiles, uint64_t order_seed) {
  auto in = host_input<T>(L_obj, thresh_obj);
  const auto params = make_params(in.L.shape(0), in.L.shape(1), seed, offset, num_samples,
                                  min_zeros, probe, probe_min);
  if (max_candidates < 0) bad("max_candidates must be >= 0");
  if (grid < 1 || grid > (1 << 20)) bad("grid must be in [1, 2^20]");
  if (chunk_tiles < 1 || chunk_tiles > (int64_t(1) << 20)) bad("chunk_tiles must be in [1, 2^20]");
  spear::SampleResult<T> r;
  {
    py::gil_scoped_release release;
    r = spear::emulation::sample_as_cuda<T>(in.L.data(), in.thresh.data(), params, offset,
                                            num_samples, max_candidates, static_cast<int>(grid),
                                            chunk_tiles, order_seed);
  }
  return to_python(r, params.b);
}

py::tuple emulate_cuda_schedule(const py::array& L, const py::array& thresh, uint64_t seed,
                                uint64_t offset, int64_t num_samples, int64_t min_zeros,
                                int64_t probe, int64_t probe_min, int64_t max_candidates,
                                int64_t grid, int64_t chunk_tiles, uint64_t order_seed) {
  if (L.dtype().is(py::dtype::of<double>()))
    return emulate_typed<double>(L, thresh, seed, offset, num_samples, min_zeros, probe,
                                 probe_min, max_candidates, grid, chunk_tiles, order_seed);
  if (L.dtype().is(py::dtype::of<float>()))
    return emulate_typed<float>(L, thresh, seed, offset, num_samples, min_zeros, probe, probe_min,
                                max_candidates, grid, chunk_tiles, order_seed);
  throw py::type_error("L must be float32 or float64");
}

// One argument given through __cuda_array_interface__ (version 2 or 3), checked.
struct DeviceArray {
  uintptr_t ptr = 0;
  std::vector<int64_t> shape;
  std::string typestr;
  bool readonly = false;
};

DeviceArray device_array(const py::object& obj, const char* name) {
  if (!py::hasattr(obj, "__cuda_array_interface__"))
    throw py::type_error(std::string(name) +
                         " must be a CUDA device array (CuPy, torch CUDA tensor, or anything "
                         "with __cuda_array_interface__)");
  const py::dict cai = obj.attr("__cuda_array_interface__");
  DeviceArray a;
  for (auto s : cai["shape"].cast<py::tuple>()) a.shape.push_back(s.cast<int64_t>());
  a.typestr = cai["typestr"].cast<std::string>();
  const auto data = cai["data"].cast<py::tuple>();
  a.ptr = data[0].cast<uintptr_t>();
  a.readonly = data[1].cast<bool>();
  int64_t size = 1;
  for (int64_t s : a.shape) size *= s;
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    const auto strides = cai["strides"].cast<std::vector<int64_t>>();
    int64_t itemsize = std::stoll(a.typestr.substr(2));
    int64_t expect = itemsize;
    for (int i = static_cast<int>(a.shape.size()) - 1; i >= 0; --i) {
      if (a.shape[i] > 1 && strides[i] != expect)
        bad(std::string(name) + " must be C-contiguous");
      expect *= a.shape[i];
    }
  }
  if (a.ptr == 0 && size > 0) bad(std::string(name) + " has a null data pointer");
  return a;
}

void expect(const DeviceArray& a, const char* name, const std::vector<int64_t>& shape,
            const std::string& typestr, bool writable) {
  auto show = [](const std::vector<int64_t>& s) {
    std::string r = "(";
    for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + (s.size() == 1 ? ",)" : ")");
  };
  if (a.typestr != typestr)
    throw py::type_error(std::string(name) + " must have typestr " + typestr + ", got " + a.typestr);
  if (a.shape != shape)
    bad(std::string(name) + " must have shape " + show(shape) + ", got " + show(a.shape));
  if (writable && a.readonly) bad(std::string(name) + " is read-only");
}

#ifdef SPEAR_WITH_CUDA
void sample_cuda(const py::object& L_obj, const py::object& thresh_obj, uint64_t seed,
                 uint64_t offset, int64_t num_samples, int64_t min_zeros, int64_t probe,
                 int64_t probe_min, const py::object& out_q_obj, const py::object& out_zeros_obj,
                 const py::object& out_index_obj, const py::object& count_obj,
                 uintptr_t stream) {
  const auto L = device_array(L_obj, "L");
  if (L.shape.size() != 2) bad("L must be 2-D (m x b)");
  if (L.typestr != "<f8" && L.typestr != "<f4")
    throw py::type_error("L must be float32 or float64, got typestr " + L.typestr);
  const int64_t m = L.shape[0], b = L.shape[1];
  const auto params = make_params(m, b, seed, offset, num_samples, min_zeros, probe, probe_min);
  if (b > spear::cuda::kMaxB)
    bad("the CUDA kernel handles b <= " + std::to_string(spear::cuda::kMaxB) + ", got b = " +
        std::to_string(b) + " (use the CPU kernel)");
  const auto thresh = device_array(thresh_obj, "thresh");
  expect(thresh, "thresh", {m}, L.typestr, false);
  const auto out_q = device_array(out_q_obj, "out_q");
  if (out_q.shape.size() != 2) bad("out_q must be 2-D (capacity x b)");
  const int64_t capacity = out_q.shape[0];
  expect(out_q, "out_q", {capacity, b}, L.typestr, true);
  expect(device_array(out_zeros_obj, "out_zeros"), "out_zeros", {capacity}, "<i4", true);
  expect(device_array(out_index_obj, "out_index"), "out_index", {capacity}, "<i8", true);
  const auto count = device_array(count_obj, "count");
  expect(count, "count", {1}, "<u8", true);
  auto* z = reinterpret_cast<int32_t*>(device_array(out_zeros_obj, "out_zeros").ptr);
  auto* idx = reinterpret_cast<int64_t*>(device_array(out_index_obj, "out_index").ptr);
  auto* cnt = reinterpret_cast<unsigned long long*>(count.ptr);
  py::gil_scoped_release release;
  if (L.typestr == "<f8")
    spear::cuda::sample<double>(reinterpret_cast<const double*>(L.ptr),
                                reinterpret_cast<const double*>(thresh.ptr), params, offset,
                                num_samples, reinterpret_cast<double*>(out_q.ptr), z, idx, cnt,
                                capacity, stream);
  else
    spear::cuda::sample<float>(reinterpret_cast<const float*>(L.ptr),
                               reinterpret_cast<const float*>(thresh.ptr), params, offset,
                               num_samples, reinterpret_cast<float*>(out_q.ptr), z, idx, cnt,
                               capacity, stream);
}

py::dict kernel_info(const std::string& dtype, int b, int m) {
  if (dtype != "float32" && dtype != "float64") throw py::type_error("dtype: float32 or float64");
  const auto k = spear::cuda::kernel_info(dtype == "float64", b, m);
  py::dict d;
  d["bmax"] = k.bmax;
  d["registers"] = k.registers;
  d["local_bytes"] = k.local_bytes;
  d["shared_bytes"] = k.shared_bytes;
  d["threads_per_block"] = k.threads_per_block;
  d["blocks_per_sm"] = k.blocks_per_sm;
  d["sms"] = k.sms;
  return d;
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
  m.def("emulate_cuda_schedule", &emulate_cuda_schedule, py::arg("L"), py::arg("thresh"),
        py::arg("seed"), py::arg("offset"), py::arg("num_samples"), py::arg("min_zeros"),
        py::arg("probe"), py::arg("probe_min"), py::arg("max_candidates"), py::arg("grid"),
        py::arg("chunk_tiles"), py::arg("order_seed"),
        "The CUDA kernel's ordered-compaction schedule run on the host (blocks in a shuffled "
        "order), for tests. Returns what sample_cpu returns.");
  m.def(
      "philox4x32_10",
      [](std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
        const auto r = spear::philox4x32_10(c[0], c[1], c[2], c[3], k[0], k[1]);
        return std::array<uint32_t, 4>{r.v[0], r.v[1], r.v[2], r.v[3]};
      },
      py::arg("counter"), py::arg("key"), "The generator both kernels use (for tests).");
  m.def("cpu_max_threads", &spear::cpu::max_threads, "Threads the CPU kernel uses by default.");
  m.def("cpu_simd", []() { return std::string(spear::cpu::simd_name()); },
        "The per-sample path the CPU kernel uses: 'avx512', 'generic' or 'scalar'.");
  m.def(
      "set_cpu_simd",
      [](const std::string& name) {
        try {
          return spear::cpu::set_simd(name);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      py::arg("name"),
      "Force the CPU kernel's per-sample path ('auto', 'scalar', 'generic', 'avx512'); "
      "returns the previous one. For tests and measurements: every path gives the same bits.");
#ifdef SPEAR_WITH_CUDA
  m.attr("built_with_cuda") = true;
  m.attr("cuda_max_b") = spear::cuda::kMaxB;
  m.def("cuda_device_count", &spear::cuda::device_count);
  m.def("cuda_unavailable_reason", &spear::cuda::unavailable_reason,
        "Why no CUDA device can be used ('' when one can).");
  m.def("cuda_runtime_version", &spear::cuda::runtime_version);
  m.def("cuda_driver_version", &spear::cuda::driver_version);
  m.def("cuda_device_name", &spear::cuda::device_name, py::arg("device") = 0);
  m.def("cuda_kernel_info", &kernel_info, py::arg("dtype"), py::arg("b"), py::arg("m") = 0,
        "Registers, local / shared memory and resident blocks per SM of the pass-1 kernel "
        "for (dtype, b) and an L of m rows.");
  m.def("sample_cuda", &sample_cuda, py::arg("L"), py::arg("thresh"), py::arg("seed"),
        py::arg("offset"), py::arg("num_samples"), py::arg("min_zeros"), py::arg("probe"),
        py::arg("probe_min"), py::arg("out_q"), py::arg("out_zeros"), py::arg("out_index"),
        py::arg("count"), py::arg("stream"),
        "Launch the CUDA sampler on device arrays (asynchronous on `stream`); capacity is "
        "out_q.shape[0].");
#else
  m.attr("built_with_cuda") = false;
  m.attr("cuda_max_b") = 0;
  m.def("cuda_device_count", []() { return 0; });
  m.def("cuda_unavailable_reason", []() {
    return std::string("spear was built without the CUDA kernel (no nvcc at build time)");
  });
#endif
}
