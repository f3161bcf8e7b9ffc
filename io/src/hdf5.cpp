// H5File: the HDF5 C API behind a small RAII interface.
#include "eisim/io/hdf5.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <type_traits>
#include <utility>

#include "eisim/io/output.hpp"
#include "eisim/models/error.hpp"

namespace eisim::io {
namespace {

static_assert(std::is_same_v<hid_t, std::int64_t>, "H5File stores hid_t as std::int64_t");

/// Once per process: initialise the library and silence its automatic error printing (the
/// errors are turned into exceptions instead).
void init_hdf5() {
  static std::once_flag once;
  std::call_once(once, [] {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  });
}

/// HDF5's explanation of the last failure (its error stack), then the stack is cleared.
std::string hdf5_message() {
  std::string msg;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
        auto* s = static_cast<std::string*>(data);
        if (e->desc != nullptr && e->desc[0] != '\0' && s->find(e->desc) == std::string::npos) {
          if (!s->empty()) *s += "; ";
          *s += e->desc;
        }
        return 0;
      },
      &msg);
  H5Eclear2(H5E_DEFAULT);
  return msg;
}

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  const std::string detail = hdf5_message();
  throw data_error(file, 0, detail.empty() ? what : what + " (HDF5: " + detail + ")");
}

/// An HDF5 identifier closed by its close function.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, -1)), close_(other.close_) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle& operator=(Handle&&) = delete;
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

/// Variable-length string type with the given character set.
Handle vlen_string_type(H5T_cset_t cset = H5T_CSET_UTF8) {
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), cset);
  return t;
}

std::string quoted(const std::string& s) {
  return "'" + s + "'";
}

bool link_exists(hid_t file, const std::string& path) {
  std::string p = path;
  while (!p.empty() && p.front() == '/') p.erase(0, 1);
  while (!p.empty() && p.back() == '/') p.pop_back();
  if (p.empty()) return true;
  std::string prefix;
  std::size_t start = 0;
  while (true) {
    const auto slash = p.find('/', start);
    prefix = p.substr(0, slash);
    if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (slash == std::string::npos) return true;
    start = slash + 1;
  }
}

void write_raw(hid_t file, const std::string& file_path, const std::string& dset, hid_t file_type,
               hid_t mem_type, const std::vector<hsize_t>& dims, const void* data) {
  if (link_exists(file, dset) && H5Ldelete(file, dset.c_str(), H5P_DEFAULT) < 0)
    fail(file_path, "cannot replace the existing dataset " + quoted(dset));
  Handle space(dims.empty() ? H5Screate(H5S_SCALAR)
                            : H5Screate_simple(int(dims.size()), dims.data(), nullptr),
               H5Sclose);
  if (!space.ok()) fail(file_path, "cannot create the dataspace of " + quoted(dset));
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Handle d(
      H5Dcreate2(file, dset.c_str(), file_type, space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
      H5Dclose);
  if (!d.ok()) fail(file_path, "cannot create dataset " + quoted(dset));
  const hsize_t n = std::accumulate(dims.begin(), dims.end(), hsize_t(1), std::multiplies<>());
  if (n > 0 && H5Dwrite(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    fail(file_path, "cannot write dataset " + quoted(dset));
}

template <class S>
void write_matrix(hid_t file, const std::string& file_path, const std::string& dset,
                  const Mat<S>& m, hid_t file_type, hid_t mem_type) {
  const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major = m;
  write_raw(file, file_path, dset, file_type, mem_type, {hsize_t(m.rows()), hsize_t(m.cols())},
            row_major.data());
}

void set_attr_raw(hid_t file, const std::string& file_path, const std::string& obj,
                  const std::string& name, hid_t file_type, hid_t mem_type, const void* data) {
  const std::string what = "attribute " + quoted(name) + " of " + quoted(obj);
  Handle o(H5Oopen(file, obj.c_str(), H5P_DEFAULT), H5Oclose);
  if (!o.ok()) fail(file_path, "cannot set " + what + ": no such object");
  if (H5Aexists(o.get(), name.c_str()) > 0 && H5Adelete(o.get(), name.c_str()) < 0)
    fail(file_path, "cannot replace " + what);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(o.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
           H5Aclose);
  if (!a.ok() || H5Awrite(a.get(), mem_type, data) < 0) fail(file_path, "cannot write " + what);
}

/// The dimensions of a dataspace.
std::vector<hsize_t> extent(hid_t space) {
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(rank > 0 ? std::size_t(rank) : 0);
  if (rank > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  return dims;
}

std::string shape_text(const std::vector<hsize_t>& dims) {
  if (dims.empty()) return "scalar";
  std::string s;
  for (auto d : dims) s += (s.empty() ? "" : " x ") + std::to_string(d);
  return s;
}

bool is_numeric(hid_t type) {
  const H5T_class_t c = H5Tget_class(type);
  return c == H5T_INTEGER || c == H5T_FLOAT;
}

/// Numeric data of a dataset as doubles (row-major) with its dimensions.
/// Throws data_error unless `n` elements of `element_size` bytes can plausibly be stored in the
/// file (a corrupted dataspace can claim 2^34 elements of a 100 kB file; eisim would allocate
/// them before HDF5 noticed anything). The allowance covers compressed datasets of other tools.
void check_extent(hid_t file, const std::string& file_path, const std::string& what, std::size_t n,
                  std::size_t element_size) {
  hsize_t file_size = 0;
  if (H5Fget_filesize(file, &file_size) < 0) {
    H5Eclear2(H5E_DEFAULT);
    return;
  }
  const double claimed = double(n) * double(std::max<std::size_t>(element_size, 1));
  if (claimed > 1024.0 * double(file_size) + double(1 << 20))
    throw data_error(file_path, 0,
                     what + " claims " + std::to_string(n) + " elements (" +
                         std::to_string(claimed / (1 << 20)) + " MiB) in a file of " +
                         std::to_string(file_size) + " bytes: the file is corrupt");
}

std::vector<double> read_numeric(hid_t file, const std::string& file_path, const std::string& dset,
                                 std::vector<hsize_t>& dims) {
  Handle d(H5Dopen2(file, dset.c_str(), H5P_DEFAULT), H5Dclose);
  if (!d.ok()) fail(file_path, "no dataset " + quoted(dset));
  Handle type(H5Dget_type(d.get()), H5Tclose);
  if (!is_numeric(type.get()))
    throw data_error(file_path, 0, "dataset " + quoted(dset) + " is not numeric");
  Handle space(H5Dget_space(d.get()), H5Sclose);
  dims = extent(space.get());
  const auto n = std::size_t(H5Sget_simple_extent_npoints(space.get()));
  check_extent(file, file_path, "dataset " + quoted(dset), n, H5Tget_size(type.get()));
  std::vector<double> buf(n);
  if (n > 0 && H5Dread(d.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
    fail(file_path, "cannot read dataset " + quoted(dset));
  return buf;
}

/// Strings of a dataset or attribute of type `type` with `n` elements; `read(mem_type, buf)`
/// performs the H5Dread / H5Aread.
template <class Read>
std::vector<std::string> read_string_data(const std::string& file_path, const std::string& what,
                                          hid_t type, hid_t space, std::size_t n, Read read) {
  if (H5Tget_class(type) != H5T_STRING)
    throw data_error(file_path, 0, what + " does not hold strings");
  std::vector<std::string> out;
  out.reserve(n);
  if (n == 0) return out;
  if (H5Tis_variable_str(type) > 0) {
    Handle mem = vlen_string_type(H5Tget_cset(type));
    std::vector<char*> ptrs(n, nullptr);
    if (read(mem.get(), ptrs.data()) < 0) fail(file_path, "cannot read " + what);
    for (char* p : ptrs) out.emplace_back(p != nullptr ? p : "");
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(mem.get(), space, H5P_DEFAULT, ptrs.data());
#else
    H5Dvlen_reclaim(mem.get(), space, H5P_DEFAULT, ptrs.data());
#endif
  } else {
    const std::size_t size = H5Tget_size(type);
    Handle mem(H5Tcopy(type), H5Tclose);
    std::vector<char> buf(n * size);
    if (read(mem.get(), buf.data()) < 0) fail(file_path, "cannot read " + what);
    const bool space_padded = H5Tget_strpad(type) == H5T_STR_SPACEPAD;
    for (std::size_t i = 0; i < n; ++i) {
      std::string s(buf.data() + i * size, size);
      s = s.substr(0, s.find('\0'));
      if (space_padded) s.erase(s.find_last_not_of(' ') + 1);
      out.push_back(std::move(s));
    }
  }
  return out;
}

Handle open_attr(hid_t file, const std::string& file_path, const std::string& obj,
                 const std::string& name) {
  if (!link_exists(file, obj))
    throw data_error(file_path, 0,
                     "cannot read attribute " + quoted(name) + ": no object " + quoted(obj));
  Handle a(H5Aopen_by_name(file, obj.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!a.ok()) fail(file_path, "no attribute " + quoted(name) + " on " + quoted(obj));
  return a;
}

template <class T>
T read_numeric_attr(hid_t file, const std::string& file_path, const std::string& obj,
                    const std::string& name, hid_t mem_type) {
  Handle a = open_attr(file, file_path, obj, name);
  Handle type(H5Aget_type(a.get()), H5Tclose);
  Handle space(H5Aget_space(a.get()), H5Sclose);
  if (!is_numeric(type.get()) || H5Sget_simple_extent_npoints(space.get()) != 1)
    throw data_error(file_path, 0,
                     "attribute " + quoted(name) + " of " + quoted(obj) + " is not a number");
  T x{};
  if (H5Aread(a.get(), mem_type, &x) < 0)
    fail(file_path, "cannot read attribute " + quoted(name) + " of " + quoted(obj));
  return x;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

// The whole-file checksum. Every file eisim writes starts with a 512-byte block before the HDF5
// data (a "user block": HDF5 and h5py look for the superblock at 0, 512, 1024, ... and skip what
// precedes it) holding one line: kStampMagic, the CRC-32 (zlib) of every byte after the block,
// and their count. The block is stripped again before eisim hands the bytes to HDF5.
constexpr std::size_t kUserBlock = 512;
constexpr char kStampMagic[] = "eisim whole-file CRC-32 v1:";

bool has_stamp(const unsigned char* head) {
  return std::memcmp(head, kStampMagic, sizeof kStampMagic - 1) == 0;
}

std::uint32_t crc_after_user_block(const std::vector<unsigned char>& image) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (std::size_t at = kUserBlock; at < image.size();) {
    const auto chunk = static_cast<uInt>(std::min<std::size_t>(image.size() - at, 1u << 30));
    crc = crc32(crc, image.data() + at, chunk);
    at += chunk;
  }
  return static_cast<std::uint32_t>(crc);
}

/// The bytes of the file to write: the stamp block, then the HDF5 image.
std::vector<unsigned char> stamped(const std::vector<unsigned char>& image) {
  std::vector<unsigned char> out(kUserBlock + image.size(), 0);
  std::memcpy(out.data() + kUserBlock, image.data(), image.size());
  char line[kUserBlock] = {};
  std::snprintf(line, sizeof line, "%s %08x over %zu bytes\n", kStampMagic,
                unsigned(crc_after_user_block(out)), image.size());
  std::memcpy(out.data(), line, std::strlen(line));
  return out;
}

void verify_stamp(const std::vector<unsigned char>& image, const std::string& path) {
  unsigned crc = 0;
  unsigned long long bytes = 0;
  char magic_end[4] = {};
  const std::string head(reinterpret_cast<const char*>(image.data()),
                         std::min(image.size(), kUserBlock));
  const bool parsed = std::sscanf(head.c_str() + sizeof kStampMagic - 1,
                                  " %8x over %llu bytes%1[\n]", &crc, &bytes, magic_end) == 3;
  if (!parsed || image.size() < kUserBlock || bytes != image.size() - kUserBlock ||
      crc != crc_after_user_block(image))
    throw data_error(path, 0,
                     "whole-file checksum mismatch: the file was changed after eisim wrote it "
                     "(by another tool, a copy cut short, or disk corruption); eisim does not "
                     "read it");
}

std::vector<unsigned char> read_fd(int fd, const std::string& path, std::size_t size) {
  std::vector<unsigned char> bytes(size);
  std::size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t r = ::pread(fd, bytes.data() + got, bytes.size() - got, off_t(got));
    const int err = errno;
    if (r < 0 && err == EINTR) continue;
    if (r < 0) throw data_error(path, got, "cannot read the file: " + errno_text(err));
    if (r == 0) throw data_error(path, got, "the file shrank while it was read");
    got += std::size_t(r);
  }
  return bytes;
}

}  // namespace

H5File::~H5File() {
  try {
    close();
  } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw; use close()
  }
}

H5File::H5File(H5File&& other) noexcept
    : id_(std::exchange(other.id_, -1)),
      path_(std::move(other.path_)),
      writable_(other.writable_),
      checksummed_(other.checksummed_) {}

H5File& H5File::operator=(H5File&& other) noexcept {
  if (this != &other) {
    if (id_ >= 0) H5Fclose(id_);
    id_ = std::exchange(other.id_, -1);
    path_ = std::move(other.path_);
    writable_ = other.writable_;
    checksummed_ = other.checksummed_;
  }
  return *this;
}

H5File H5File::create(const std::string& path) {
  init_hdf5();
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0)
    fail(path, "cannot create the HDF5 file (does the directory exist and is it writable?)");
  return H5File(id, path, true);
}

H5File H5File::open_read(const std::string& path, bool require_checksum) {
  init_hdf5();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    throw data_error(path, 0, err == ENOENT ? "file not found" : "cannot open: " + errno_text(err));
  }
  std::vector<unsigned char> image;
  try {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw data_error(path, 0, "cannot stat: " + errno_text(errno));
    // HDF5 would block forever opening a FIFO, and read a device without end.
    if (!S_ISREG(st.st_mode))
      throw data_error(path, 0,
                       std::string("is ") + describe_file_type(st.st_mode) +
                           ", not a regular file (an HDF5 file was expected)");
    unsigned char head[kUserBlock] = {};
    const ssize_t got = ::pread(fd, head, sizeof head, 0);
    if (got == ssize_t(sizeof head) && has_stamp(head)) {
      // A file written by eisim: its whole-file CRC-32 is checked on the raw bytes before
      // libhdf5 parses anything (libhdf5 can crash on a corrupted file; fuzz/pending/), and the
      // very bytes checked are the ones opened.
      image = read_fd(fd, path, std::size_t(st.st_size));
      verify_stamp(image, path);
      image.erase(image.begin(), image.begin() + kUserBlock);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  if (!image.empty()) {
    Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    if (!fapl.ok() || H5Pset_fapl_core(fapl.get(), 1 << 20, 0) < 0 ||
        H5Pset_file_image(fapl.get(), image.data(), image.size()) < 0)
      fail(path, "cannot set up an in-memory copy of the HDF5 file");
    const hid_t id = H5Fopen((path + " (in memory)").c_str(), H5F_ACC_RDONLY, fapl.get());
    if (id < 0) fail(path, "cannot open the HDF5 file");
    H5File f(id, path, false);
    f.checksummed_ = true;
    return f;
  }
  if (require_checksum)  // refused before libhdf5 parses a byte of it
    throw data_error(path, 0,
                     "no whole-file checksum: not written by this eisim (an older version, or "
                     "rewritten by another tool); eisim does not resume from or reuse it");
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw data_error(path, 0, "not an HDF5 file");
  }
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) fail(path, "cannot open the HDF5 file");
  return H5File(id, path, false);
}

void H5File::require_open(const char* what) const {
  if (id_ < 0) throw data_error(path_, 0, std::string(what) + ": the file is closed");
}

void H5File::require_writable(const char* what) const {
  require_open(what);
  if (!writable_) throw data_error(path_, 0, std::string(what) + ": the file is open read-only");
}

void H5File::write(const std::string& dset, const Mat<float>& m) {
  require_writable("write");
  write_matrix(id_, path_, dset, m, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT);
}

void H5File::write(const std::string& dset, const Mat<double>& m) {
  require_writable("write");
  write_matrix(id_, path_, dset, m, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE);
}

void H5File::write(const std::string& dset, const std::vector<double>& v) {
  require_writable("write");
  write_raw(id_, path_, dset, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, {hsize_t(v.size())}, v.data());
}

void H5File::write(const std::string& dset, const std::vector<float>& v) {
  require_writable("write");
  write_raw(id_, path_, dset, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, {hsize_t(v.size())}, v.data());
}

void H5File::write(const std::string& dset, const std::vector<std::int64_t>& v) {
  require_writable("write");
  write_raw(id_, path_, dset, H5T_STD_I64LE, H5T_NATIVE_INT64, {hsize_t(v.size())}, v.data());
}

void H5File::write(const std::string& dset, const std::vector<std::string>& v) {
  require_writable("write");
  std::vector<const char*> ptrs;
  ptrs.reserve(v.size());
  for (const auto& s : v) ptrs.push_back(s.c_str());
  Handle type = vlen_string_type();
  write_raw(id_, path_, dset, type.get(), type.get(), {hsize_t(v.size())}, ptrs.data());
}

void H5File::write_tensor(const std::string& dset, const std::vector<float>& data,
                          const std::vector<std::size_t>& dims) {
  require_writable("write_tensor");
  const std::size_t n =
      std::accumulate(dims.begin(), dims.end(), std::size_t(1), std::multiplies<>());
  if (n != data.size())
    throw internal_error("H5File::write_tensor(" + dset + "): " + std::to_string(data.size()) +
                         " values for dimensions of " + std::to_string(n) + " elements");
  const std::vector<hsize_t> hdims(dims.begin(), dims.end());
  write_raw(id_, path_, dset, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, hdims, data.data());
}

void H5File::write_scalar(const std::string& dset, double x) {
  require_writable("write_scalar");
  write_raw(id_, path_, dset, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, {}, &x);
}

void H5File::write_string(const std::string& dset, const std::string& s) {
  require_writable("write_string");
  const char* p = s.c_str();
  Handle type = vlen_string_type();
  write_raw(id_, path_, dset, type.get(), type.get(), {}, &p);
}

void H5File::set_attr(const std::string& obj, const std::string& name, const std::string& value) {
  require_writable("set_attr");
  const char* p = value.c_str();
  Handle type = vlen_string_type();
  set_attr_raw(id_, path_, obj, name, type.get(), type.get(), &p);
}

void H5File::set_attr(const std::string& obj, const std::string& name, double value) {
  require_writable("set_attr");
  set_attr_raw(id_, path_, obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

void H5File::set_attr(const std::string& obj, const std::string& name, std::int64_t value) {
  require_writable("set_attr");
  set_attr_raw(id_, path_, obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

void H5File::set_attr(const std::string& obj, const std::string& name, std::uint64_t value) {
  require_writable("set_attr");
  set_attr_raw(id_, path_, obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value);
}

void H5File::copy_from(const H5File& src, const std::string& src_path,
                       const std::string& dst_path) {
  require_writable("copy_from");
  src.require_open("copy_from");
  if (!link_exists(src.id_, src_path))
    throw data_error(src.path_, 0, "cannot copy " + quoted(src_path) + ": no such object");
  if (link_exists(id_, dst_path) && H5Ldelete(id_, dst_path.c_str(), H5P_DEFAULT) < 0)
    fail(path_, "cannot replace " + quoted(dst_path));
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  if (H5Ocopy(src.id_, src_path.c_str(), id_, dst_path.c_str(), H5P_DEFAULT, lcpl.get()) < 0)
    fail(path_, "cannot copy " + quoted(src_path) + " from " + src.path_);
}

bool H5File::exists(const std::string& path) const {
  require_open("exists");
  return link_exists(id_, path);
}

Mat<double> H5File::read_matrix(const std::string& dset) const {
  require_open("read_matrix");
  std::vector<hsize_t> dims;
  std::vector<double> buf = read_numeric(id_, path_, dset, dims);
  if (dims.size() > 2)
    throw data_error(
        path_, 0,
        "dataset " + quoted(dset) + " has shape " + shape_text(dims) + "; expected a matrix");
  const auto rows = Eigen::Index(dims.empty() ? 1 : dims[0]);
  const auto cols = Eigen::Index(dims.size() == 2 ? dims[1] : 1);
  using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  return Eigen::Map<const RowMajor>(buf.data(), rows, cols);
}

std::vector<double> H5File::read_vector(const std::string& dset) const {
  require_open("read_vector");
  std::vector<hsize_t> dims;
  std::vector<double> buf = read_numeric(id_, path_, dset, dims);
  const bool vector_like = dims.size() <= 1 || (dims.size() == 2 && (dims[0] == 1 || dims[1] == 1));
  if (!vector_like)
    throw data_error(
        path_, 0,
        "dataset " + quoted(dset) + " has shape " + shape_text(dims) + "; expected a vector");
  return buf;
}

std::vector<std::string> H5File::read_strings(const std::string& dset) const {
  require_open("read_strings");
  Handle d(H5Dopen2(id_, dset.c_str(), H5P_DEFAULT), H5Dclose);
  if (!d.ok()) fail(path_, "no dataset " + quoted(dset));
  Handle type(H5Dget_type(d.get()), H5Tclose);
  Handle space(H5Dget_space(d.get()), H5Sclose);
  const auto n = std::size_t(H5Sget_simple_extent_npoints(space.get()));
  check_extent(id_, path_, "dataset " + quoted(dset), n, H5Tget_size(type.get()));
  return read_string_data(path_, "dataset " + quoted(dset), type.get(), space.get(), n,
                          [&](hid_t mem, void* buf) {
                            return H5Dread(d.get(), mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
                          });
}

std::string H5File::read_string(const std::string& dset) const {
  const auto v = read_strings(dset);
  if (v.size() != 1)
    throw data_error(path_, 0,
                     "dataset " + quoted(dset) + " holds " + std::to_string(v.size()) +
                         " strings; expected one");
  return v.front();
}

std::string H5File::attr_string(const std::string& obj, const std::string& name) const {
  require_open("attr_string");
  Handle a = open_attr(id_, path_, obj, name);
  Handle type(H5Aget_type(a.get()), H5Tclose);
  Handle space(H5Aget_space(a.get()), H5Sclose);
  const auto n = std::size_t(H5Sget_simple_extent_npoints(space.get()));
  const std::string what = "attribute " + quoted(name) + " of " + quoted(obj);
  check_extent(id_, path_, what, n, H5Tget_size(type.get()));
  auto v = read_string_data(path_, what, type.get(), space.get(), n,
                            [&](hid_t mem, void* buf) { return H5Aread(a.get(), mem, buf); });
  if (v.size() != 1) throw data_error(path_, 0, what + " is not a single string");
  return v.front();
}

double H5File::attr_double(const std::string& obj, const std::string& name) const {
  require_open("attr_double");
  return read_numeric_attr<double>(id_, path_, obj, name, H5T_NATIVE_DOUBLE);
}

std::int64_t H5File::attr_int(const std::string& obj, const std::string& name) const {
  require_open("attr_int");
  return read_numeric_attr<std::int64_t>(id_, path_, obj, name, H5T_NATIVE_INT64);
}

std::vector<std::string> H5File::list(const std::string& group) const {
  require_open("list");
  if (!link_exists(id_, group)) throw data_error(path_, 0, "no group " + quoted(group));
  Handle g(H5Gopen2(id_, group.c_str(), H5P_DEFAULT), H5Gclose);
  if (!g.ok()) fail(path_, quoted(group) + " is not a group");
  std::vector<std::string> names;
  const herr_t r = H5Literate(
      g.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
        static_cast<std::vector<std::string>*>(data)->emplace_back(name);
        return 0;
      },
      &names);
  if (r < 0) fail(path_, "cannot list the group " + quoted(group));
  return names;
}

void H5File::close() {
  if (id_ < 0) return;
  const hid_t id = std::exchange(id_, -1);
  if (H5Fclose(id) < 0) fail(path_, "cannot close (flush) the HDF5 file");
}

// ---------------------------------------------------------------------------------------------
// Atomic writes

H5File H5File::create_in_memory(const std::string& name) {
  init_hdf5();
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  // The core driver keeps the whole file in memory (no backing store): nothing touches the disk
  // until write_atomically writes the finished image with plain, checked POSIX calls.
  if (!fapl.ok() || H5Pset_fapl_core(fapl.get(), 1 << 20, 0) < 0)
    fail(name, "cannot set up an in-memory HDF5 file");
  const hid_t id = H5Fcreate(name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (id < 0) fail(name, "cannot create an in-memory HDF5 file");
  return H5File(id, name, true);
}

H5File H5File::open_in_memory_copy(const std::string& path) {
  init_hdf5();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    throw data_error(path, 0, "cannot open the file: " + errno_text(err));
  }
  std::vector<unsigned char> bytes;
  try {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw data_error(path, 0, "cannot stat: " + errno_text(errno));
    if (!S_ISREG(st.st_mode)) throw data_error(path, 0, "not a regular file");
    bytes = read_fd(fd, path, std::size_t(st.st_size));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  if (bytes.size() >= kUserBlock && has_stamp(bytes.data())) {
    verify_stamp(bytes, path);
    bytes.erase(bytes.begin(), bytes.begin() + kUserBlock);
  }
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.ok() || H5Pset_fapl_core(fapl.get(), 1 << 20, 0) < 0 ||
      H5Pset_file_image(fapl.get(), bytes.data(), bytes.size()) < 0)
    fail(path, "cannot set up an in-memory copy of the HDF5 file");
  const std::string name = path + " (in memory)";
  const hid_t id = H5Fopen(name.c_str(), H5F_ACC_RDWR, fapl.get());
  if (id < 0) fail(path, "cannot open the HDF5 file (is it an HDF5 file written by eisim?)");
  return H5File(id, name, true);
}

std::vector<unsigned char> H5File::close_to_image() {
  require_writable("close_to_image");
  if (H5Fflush(id_, H5F_SCOPE_GLOBAL) < 0) fail(path_, "cannot flush the in-memory HDF5 file");
  const ssize_t n = H5Fget_file_image(id_, nullptr, 0);
  if (n < 0) fail(path_, "cannot get the size of the in-memory HDF5 file");
  std::vector<unsigned char> image(static_cast<std::size_t>(n));
  if (H5Fget_file_image(id_, image.data(), image.size()) != n)
    fail(path_, "cannot copy the in-memory HDF5 file");
  close();
  return image;
}

void H5File::remove(const std::string& obj) {
  require_writable("remove");
  if (!link_exists(id_, obj)) return;
  if (H5Ldelete(id_, obj.c_str(), H5P_DEFAULT) < 0) fail(path_, "cannot remove " + quoted(obj));
}

void write_atomically(const std::string& path, const std::function<void(H5File&)>& fill) {
  // The whole file is built in memory first: a failure there (or Ctrl-C) leaves no file behind.
  std::vector<unsigned char> image;
  {
    H5File f = H5File::create_in_memory(path + " (in memory)");
    fill(f);
    image = f.close_to_image();
  }
  write_bytes_atomically(path, stamped(image));
}

void update_atomically(const std::string& path, const std::function<void(H5File&)>& edit) {
  std::vector<unsigned char> image;
  {
    H5File f = H5File::open_in_memory_copy(path);
    edit(f);
    image = f.close_to_image();
  }
  write_bytes_atomically(path, stamped(image));
}

}  // namespace eisim::io
