#pragma once
/// \file
/// Crash-safe file replacement, used for checkpoints: after `write_file_atomically(path, ...)`
/// returns, `path` holds the new bytes durably; if the process dies or the write fails at any
/// point before that, `path` still holds its previous contents (or still does not exist).
///
/// How: the bytes go to a new temporary file in the same directory as `path` (created with
/// O_CREAT|O_EXCL, named ".<name>.tmp.<pid>.<n>"), which is fsync'ed and then renamed over
/// `path` (rename is atomic within one file system), and finally the directory is fsync'ed so
/// the rename itself is durable (ext4/XFS may otherwise persist the rename before the data).
///
/// Permissions: a new file gets mode 0644 (minus the umask); replacing an existing regular file
/// keeps that file's mode bits (a temporary file created 0600 would otherwise silently change
/// a checkpoint's permissions). Ownership is not copied. If `path` is a symbolic link, the link
/// itself is replaced by a regular file.
///
/// A process killed mid-write (SIGKILL, power loss) can leave its temporary file behind; it is
/// never mistaken for the target and can be deleted. On every error that the writer sees, the
/// temporary file is removed before edifice::Error is thrown.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace edifice::nn {

/// Atomically replaces (or creates) `path` with `bytes`. Throws edifice::Error naming the path,
/// the step that failed and the system's error text, e.g.
/// `cannot write "ckpt/model.safetensors": creating a temporary file in "ckpt" failed: No such
/// file or directory`.
void write_file_atomically(const std::string& path, std::string_view bytes);

/// Same, with the contents given as consecutive pieces (written in order without first
/// concatenating them, so a large checkpoint is not held in memory twice).
void write_file_atomically(const std::string& path, std::span<const std::string_view> pieces);

namespace detail {
/// Test hook: when set, called after each chunk (at most 1 MiB) written to the temporary file,
/// with that file's path and the bytes written so far. Tests use it to stop or fail a writer
/// mid-write. Process-wide and not synchronised: set it only in single-threaded tests.
using AtomicWriteHook = void (*)(const std::string& temp_path, std::uint64_t bytes_written);
void set_atomic_write_hook(AtomicWriteHook hook);
}  // namespace detail

}  // namespace edifice::nn
