#pragma once
// HDF5 output files: a small RAII wrapper over the HDF5 C API, which stays inside io/src.
//
// Objects are addressed by path ("layers/0/W_EX" or "/layers/0/W_EX"); writing creates the
// intermediate groups and replaces an existing dataset of the same name. Matrices keep their
// element layout: h5py's f[dset][i, j] == m(i, j) (the data are stored row-major, as HDF5 and
// NumPy expect). Every failure throws eisim::data_error naming the file and the object, with
// HDF5's own explanation; HDF5's automatic error printing is switched off.
// Serial HDF5 is not thread-safe: use an H5File from one thread at a time.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eisim/models/types.hpp"

namespace eisim::io {

class H5File {
 public:
  H5File() = default;  ///< a closed file
  ~H5File();
  H5File(H5File&& other) noexcept;
  H5File& operator=(H5File&& other) noexcept;
  H5File(const H5File&) = delete;
  H5File& operator=(const H5File&) = delete;

  /// Create (truncate) a file for writing.
  static H5File create(const std::string& path);
  /// Create a file that lives in memory only (HDF5's core driver); `name` names it in messages.
  /// close_to_image() returns its bytes. write_atomically builds every output this way.
  static H5File create_in_memory(const std::string& name);
  /// An in-memory, writable copy of an existing file (its bytes are read once); the file on
  /// disk is not touched. update_atomically uses it.
  static H5File open_in_memory_copy(const std::string& path);
  /// Open an existing file read-only; data_error if it is missing, not a regular file, not an
  /// HDF5 file, or carries eisim's whole-file checksum and does not match it (the file is then
  /// read into memory, checked, and opened from those bytes).
  /// With `require_checksum`, a file without eisim's whole-file checksum is refused before
  /// libhdf5 opens it (libhdf5 can crash on a corrupted file).
  static H5File open_read(const std::string& path, bool require_checksum = false);

  bool is_open() const { return id_ >= 0; }
  /// True if the file carries eisim's whole-file checksum (every file eisim writes does), which
  /// open_read verified on the raw bytes before HDF5 parsed them.
  bool has_file_checksum() const { return checksummed_; }
  const std::string& path() const { return path_; }

  // Datasets. Shape (rows, cols) for matrices, (n) for vectors.
  void write(const std::string& dset, const Mat<float>& m);
  void write(const std::string& dset, const Mat<double>& m);
  void write(const std::string& dset, const std::vector<double>& v);
  void write(const std::string& dset, const std::vector<float>& v);
  void write(const std::string& dset, const std::vector<std::int64_t>& v);
  void write(const std::string& dset,
             const std::vector<std::string>& v);  ///< variable-length UTF-8
  /// An N-dimensional float array; `data` is row-major (last index fastest), size prod(dims).
  void write_tensor(const std::string& dset, const std::vector<float>& data,
                    const std::vector<std::size_t>& dims);
  void write_scalar(const std::string& dset, double x);
  void write_string(const std::string& dset, const std::string& s);  ///< variable-length UTF-8

  // Attributes on a group or dataset ("/" is the root group); an existing one is replaced.
  void set_attr(const std::string& obj, const std::string& name, const std::string& value);
  void set_attr(const std::string& obj, const std::string& name, const char* value) {
    set_attr(obj, name, std::string(value));
  }
  void set_attr(const std::string& obj, const std::string& name, double value);
  void set_attr(const std::string& obj, const std::string& name, std::int64_t value);
  void set_attr(const std::string& obj, const std::string& name, std::uint64_t value);
  void set_attr(const std::string& obj, const std::string& name, int value) {
    set_attr(obj, name, static_cast<std::int64_t>(value));
  }

  /// True if the group or dataset exists ("/" always does).
  bool exists(const std::string& path) const;
  /// A 2-D numeric dataset (a 1-D one is returned as a column, a scalar as 1 x 1).
  Mat<double> read_matrix(const std::string& dset) const;
  /// A 1-D numeric dataset (a scalar or an n x 1 / 1 x n dataset is accepted too).
  std::vector<double> read_vector(const std::string& dset) const;
  /// A 1-D string dataset (variable- or fixed-length).
  std::vector<std::string> read_strings(const std::string& dset) const;
  /// A scalar string dataset.
  std::string read_string(const std::string& dset) const;
  std::string attr_string(const std::string& obj, const std::string& name) const;
  double attr_double(const std::string& obj, const std::string& name) const;
  std::int64_t attr_int(const std::string& obj, const std::string& name) const;
  /// Remove a group or dataset (and everything below it); nothing if it does not exist.
  void remove(const std::string& obj);
  /// Names of the members of a group, sorted by name.
  std::vector<std::string> list(const std::string& group) const;

  /// Flush and close; data_error if HDF5 fails to write the file. Closing twice is harmless.
  /// Copy the object `src_path` of `src` (a group with everything below it and its
  /// attributes, or a dataset) to `dst_path` in this file; intermediate groups are created and
  /// an existing object at `dst_path` is replaced.
  void copy_from(const H5File& src, const std::string& src_path, const std::string& dst_path);

  void close();

  /// Flush and close a file made by create_in_memory, returning the bytes of the HDF5 file.
  std::vector<unsigned char> close_to_image();

 private:
  H5File(std::int64_t id, std::string path, bool writable)
      : id_(id), path_(std::move(path)), writable_(writable) {}
  void require_open(const char* what) const;
  void require_writable(const char* what) const;

  std::int64_t id_ = -1;  ///< hid_t
  std::string path_;
  bool writable_ = false;
  bool checksummed_ = false;
};

/// Write a file atomically and durably. `fill` writes into an in-memory HDF5 file; its bytes are
/// then written to a new temporary file beside it (path.XXXXXX.tmp, made by mkostemps), fsynced,
/// renamed over `path`, and the directory is fsynced. If fill or any write throws (a full disk,
/// say), nothing is left behind, any existing `path` is untouched and the exception propagates
/// (data_error naming the file and the system's reason). The caller decides whether `path` may be
/// replaced (see output.hpp).
void write_atomically(const std::string& path, const std::function<void(H5File&)>& fill);

/// Edit an existing file atomically: `edit` changes an in-memory copy, which then replaces `path`
/// exactly as in write_atomically.
void update_atomically(const std::string& path, const std::function<void(H5File&)>& edit);

}  // namespace eisim::io
