//! Symlink-safe file access below the local driver's base directory. This
//! is the only part of the local driver that touches the filesystem.
//!
//! - **No link is followed below the base.** Every file and directory below
//!   the base is reached from an open handle of its parent directory
//!   (`openat`, `mkdirat`, `renameat`, `unlinkat`, `fstatat`), one name at a
//!   time, with `O_NOFOLLOW`. A symbolic link anywhere below the base — a
//!   linked shard, trace directory, `nodes/`, or a linked `updates.jsonl` — is
//!   refused, never followed, so no read or write can leave the base. (The
//!   base itself is the path the application configured; it is resolved once,
//!   when the driver is made, and links in it are followed.)
//! - **Only regular files are read or written.** Files are opened with
//!   `O_NONBLOCK` (so opening a FIFO cannot block) and checked with `fstat`
//!   before anything is read or written; a FIFO, device or socket is refused.
//!   Renaming over or truncating a name that is not a regular file is refused
//!   too. Removing never follows a link: a link is removed itself.
//! - **Reads are capped.** A whole-file read ([`Dir::read_file`]) reads at most
//!   the size `fstat` reported, and refuses a file larger than its cap. Line
//!   files are streamed ([`Dir::read_lines`], [`for_each_line`]) with a cap per
//!   line and none on the total.
//!
//! A refusal is reported by what the caller was doing ([`Access`]): a write
//! gets [`Error::Storage`], a read [`Error::Corrupt`], both naming the path.
//! Other I/O errors are [`Error::Storage`] naming the path.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::driver::format::line_content;
use crate::error::{Error, Result};

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

/// What the caller was doing when a file was refused, which decides the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Reading stored data: a refused file is [`Error::Corrupt`].
    Read,
    /// Writing: a refused file is [`Error::Storage`].
    Write,
}

impl Access {
    /// The error for a path that cannot be used (a link, not a regular file, too big).
    pub(super) fn refuse(self, path: &Path, what: impl Into<String>) -> Error {
        let location = path.display().to_string();
        match self {
            Access::Read => Error::corrupt(location, what),
            Access::Write => Error::storage(location, what),
        }
    }
}

/// What a directory entry is, without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A regular file.
    File,
    /// A directory (not a link to one).
    Dir,
    /// A symbolic link, FIFO, device or socket.
    Other,
}

impl Kind {
    fn of(t: FileType) -> Kind {
        match t {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            _ => Kind::Other,
        }
    }
}

/// One directory entry (names that are not UTF-8 are skipped: the driver
/// never writes them).
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The entry's name.
    pub(super) name: String,
    /// What it is.
    pub(super) kind: Kind,
}

/// How far an append is synced before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sync {
    /// Not at all (handed to the OS).
    None,
    /// `fdatasync`.
    Data,
    /// `fsync`.
    All,
}

/// What one append did, so that it can be undone.
#[derive(Debug, Clone)]
pub(super) struct Appended {
    /// The file's name in its directory.
    pub(super) name: String,
    /// Its length before the append.
    pub(super) len_before: u64,
    /// Whether the append created it.
    pub(super) created: bool,
}

/// An open directory at or below the base, with its path (for messages).
#[derive(Debug)]
pub(super) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// `is a FIFO`, `is a directory`, ...: what an entry of type `kind` is.
fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "is a regular file",
        FileType::Directory => "is a directory",
        FileType::Symlink => "is a symbolic link",
        FileType::Fifo => "is a FIFO",
        FileType::Socket => "is a socket",
        FileType::CharacterDevice => "is a character device",
        FileType::BlockDevice => "is a block device",
        FileType::Unknown => "is of an unknown type",
    }
}

/// Why an entry of type `kind` is refused where a regular file is expected.
fn not_regular(kind: FileType) -> String {
    format!("{}, not a regular file", describe(kind))
}

impl Dir {
    /// Opens the base directory, creating it (and its parents, mode 0755) if
    /// missing. Links in `path` are followed: it is the configured base.
    pub(super) fn open_base(path: &Path) -> Result<Dir> {
        let mut b = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut b, DIR_MODE);
        b.recursive(true)
            .create(path)
            .map_err(|e| Error::io(path, e))?;
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(path, e.into()))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory.
    pub(super) fn child(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn io(&self, name: &str, e: Errno) -> Error {
        Error::io(self.child(name), e.into())
    }

    // ---- directories ------------------------------------------------------------

    /// Opens the subdirectory `name`; `None` if it does not exist. A link or
    /// anything but a directory is refused.
    pub(super) fn open_dir(&self, name: &str, access: Access) -> Result<Option<Dir>> {
        debug_assert!(!name.contains('/') && name != ".." && name != ".");
        match self.openat_dir(name) {
            Ok(fd) => Ok(Some(Dir {
                fd,
                path: self.child(name),
            })),
            Err(Errno::NOENT) => Ok(None),
            // Linux says ENOTDIR for a link opened with O_DIRECTORY | O_NOFOLLOW.
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let what = match self.file_type(name)? {
                    Some(FileType::Symlink) => {
                        "is a symbolic link, not a directory (links are never followed)".to_owned()
                    }
                    Some(kind) => format!("{}, not a directory", describe(kind)),
                    None => "vanished while it was opened".to_owned(),
                };
                Err(access.refuse(&self.child(name), what))
            }
            Err(e) => Err(self.io(name, e)),
        }
    }

    /// `openat` of the subdirectory `name`: fails with `NOTDIR` or `LOOP`
    /// for anything but a directory (a link included), never blocks.
    fn openat_dir(&self, name: &str) -> std::result::Result<OwnedFd, Errno> {
        let flags = OFlags::RDONLY
            | OFlags::DIRECTORY
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC
            | OFlags::NONBLOCK;
        rfs::openat(&self.fd, name, flags, Mode::empty())
    }

    /// Opens `a/b/c` below this directory, one component at a time.
    pub(super) fn open_path(&self, rel: &str, access: Access) -> Result<Option<Dir>> {
        let mut parts = rel.split('/').filter(|p| !p.is_empty());
        let Some(first) = parts.next() else {
            return Err(access.refuse(&self.path, "empty relative path"));
        };
        let Some(mut dir) = self.open_dir(first, access)? else {
            return Ok(None);
        };
        for part in parts {
            match dir.open_dir(part, access)? {
                Some(d) => dir = d,
                None => return Ok(None),
            }
        }
        Ok(Some(dir))
    }

    /// Creates the subdirectory `name` (mode 0755); `false` if something
    /// with that name already exists (what it is is checked when it is opened).
    pub(super) fn make_dir(&self, name: &str) -> Result<bool> {
        match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(self.io(name, e)),
        }
    }

    /// Opens the subdirectory `name`, creating it if missing; also returns
    /// whether it was created. A link in its place is refused.
    pub(super) fn open_or_make_dir(&self, name: &str) -> Result<(Dir, bool)> {
        if let Some(d) = self.open_dir(name, Access::Write)? {
            return Ok((d, false));
        }
        self.make_or_open_dir(name)
    }

    /// Creates the subdirectory `name` and opens it; opens it if it exists
    /// already. Also returns whether it was created. For a directory that
    /// is most likely missing (one inside a directory this batch made):
    /// `mkdir` first saves the failed `open` that
    /// [`open_or_make_dir`](Dir::open_or_make_dir) would start with.
    pub(super) fn make_or_open_dir(&self, name: &str) -> Result<(Dir, bool)> {
        let created = self.make_dir(name)?;
        match self.open_dir(name, Access::Write)? {
            Some(d) => Ok((d, created)),
            None => Err(Error::storage(
                self.child(name).display().to_string(),
                "directory vanished right after it was created",
            )),
        }
    }

    /// The type of `name`, without following a link; `None` if it does not exist.
    fn file_type(&self, name: &str) -> Result<Option<FileType>> {
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.io(name, e)),
        }
    }

    /// What `name` is, without following a link; `None` if it does not exist.
    pub(super) fn kind_of(&self, name: &str) -> Result<Option<Kind>> {
        Ok(self.file_type(name)?.map(Kind::of))
    }

    /// The size of the regular file `name`; `None` if it does not exist or
    /// is not a regular file.
    pub(super) fn file_size(&self, name: &str) -> Result<Option<u64>> {
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                Ok(Some(st.st_size as u64))
            }
            Ok(_) | Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.io(name, e)),
        }
    }

    /// Whether anything (even a link) is called `name` here.
    pub(super) fn has(&self, name: &str) -> Result<bool> {
        Ok(self.kind_of(name)?.is_some())
    }

    /// The directory's entries (without `.` and `..`), in no particular order.
    ///
    /// On Linux the entries are read from this directory's own descriptor
    /// (rewound first), not from a second one opened for the purpose: a
    /// listing costs one `lseek` and the `getdents` calls, not also an
    /// `openat`, an `fcntl` and a `close`.
    pub(super) fn entries(&self) -> Result<Vec<Entry>> {
        self.read_entries(true)
    }

    /// [`entries`](Dir::entries); `rewind: false` for a descriptor that was
    /// just opened (nothing read from it yet: no `lseek` needed).
    fn read_entries(&self, rewind: bool) -> Result<Vec<Entry>> {
        let err = |e: Errno| Error::io(&self.path, e.into());
        let mut named: Vec<(String, FileType)> = Vec::new();
        #[cfg(target_os = "linux")]
        {
            if rewind {
                rfs::seek(&self.fd, rustix::fs::SeekFrom::Start(0)).map_err(err)?;
            }
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
            let mut it = rfs::RawDir::new(&self.fd, &mut buf);
            while let Some(e) = it.next() {
                let e = e.map_err(err)?;
                if let Ok(name) = e.file_name().to_str() {
                    named.push((name.to_owned(), e.file_type()));
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        for e in rfs::Dir::read_from(&self.fd).map_err(err)? {
            let e = e.map_err(err)?;
            if let Ok(name) = e.file_name().to_str() {
                named.push((name.to_owned(), e.file_type()));
            }
        }
        let mut out = Vec::with_capacity(named.len());
        for (name, t) in named {
            if name == "." || name == ".." {
                continue;
            }
            let kind = match t {
                FileType::Unknown => match self.kind_of(&name)? {
                    Some(k) => k,
                    None => continue,
                },
                t => Kind::of(t),
            };
            out.push(Entry { name, kind });
        }
        Ok(out)
    }

    /// `fsync` of the directory itself (makes created, renamed and removed
    /// names durable).
    pub(super) fn sync(&self) -> Result<()> {
        count_sync();
        rfs::fsync(&self.fd).map_err(|e| Error::io(&self.path, e.into()))
    }

    // ---- files ------------------------------------------------------------------

    /// Opens the existing regular file `name` with `flags` (plus
    /// `O_NOFOLLOW`); `None` if it does not exist. Anything else is refused
    /// before a byte is read or written; a FIFO does not block.
    fn open_file(&self, name: &str, flags: OFlags, access: Access) -> Result<Option<(File, u64)>> {
        let all = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = match rfs::openat(&self.fd, name, all, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => {
                return Err(access.refuse(
                    &self.child(name),
                    "is a symbolic link (links are never followed)",
                ));
            }
            // A FIFO without a reader, opened for writing.
            Err(Errno::NXIO) => {
                return Err(access.refuse(&self.child(name), not_regular(FileType::Fifo)));
            }
            Err(Errno::ISDIR) => {
                return Err(access.refuse(&self.child(name), not_regular(FileType::Directory)));
            }
            Err(e) => return Err(self.io(name, e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| self.io(name, e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(access.refuse(&self.child(name), not_regular(kind)));
        }
        // Back to blocking I/O for the regular file (O_NONBLOCK only kept
        // the open itself from blocking).
        rfs::fcntl_setfl(&fd, flags & OFlags::APPEND).map_err(|e| self.io(name, e))?;
        Ok(Some((File::from(fd), st.st_size as u64)))
    }

    /// Opens the regular file `name` for reading; also returns its size.
    pub(super) fn open_read(&self, name: &str) -> Result<Option<(File, u64)>> {
        self.open_file(name, OFlags::RDONLY, Access::Read)
    }

    /// Opens the existing regular file `name` for reading and writing
    /// (no create); also returns its size.
    pub(super) fn open_read_write(&self, name: &str) -> Result<Option<(File, u64)>> {
        self.open_file(name, OFlags::RDWR, Access::Write)
    }

    /// Reads the regular file `name` whole; `None` if missing; `Corrupt` if
    /// it is larger than `cap`. Reads at most the size `fstat` reported.
    pub(super) fn read_file(&self, name: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let Some((file, len)) = self.open_read(name)? else {
            return Ok(None);
        };
        if len > cap {
            return Err(Access::Read.refuse(
                &self.child(name),
                format!("file is {len} bytes, larger than the {cap} byte limit"),
            ));
        }
        let mut data = Vec::with_capacity(len as usize);
        file.take(len)
            .read_to_end(&mut data)
            .map_err(|e| Error::io(self.child(name), e))?;
        Ok(Some(data))
    }

    /// Streams the complete lines of the regular file `name` (see
    /// [`for_each_line`]); `false` if it does not exist. Reads at most the
    /// size `fstat` reported.
    pub(super) fn read_lines(
        &self,
        name: &str,
        max_line: u64,
        f: impl FnMut(&[u8], &str) -> Result<()>,
    ) -> Result<bool> {
        let Some((file, len)) = self.open_read(name)? else {
            return Ok(false);
        };
        let path = self.child(name);
        let reader = BufReader::with_capacity(64 * 1024, file.take(len));
        for_each_line(reader, &path.display().to_string(), max_line, f)?;
        Ok(true)
    }

    /// Appends `bytes` to the regular file `name` in one write, creating it
    /// (mode 0644) if missing. On a failed write the file is cut back (or
    /// removed, if this call created it) before the error is returned.
    ///
    /// `fresh`: this directory was just created by the caller, so the file
    /// is most likely missing: it is created exclusively first (an existing
    /// one is then opened as usual), which saves a failed `open`.
    pub(super) fn append(
        &self,
        name: &str,
        bytes: &[u8],
        sync: Sync,
        fresh: bool,
    ) -> Result<Appended> {
        let flags = OFlags::WRONLY | OFlags::APPEND;
        let existing = if fresh {
            None
        } else {
            self.open_file(name, flags, Access::Write)?
        };
        let (mut file, len, created) = match existing {
            Some((f, len)) => (f, len, false),
            None => match self.create_file(name, flags) {
                Ok(f) => (f, 0, true),
                // Created by someone else in between: append to it.
                Err(Errno::EXIST) => match self.open_file(name, flags, Access::Write)? {
                    Some((f, len)) => (f, len, false),
                    None => return Err(self.io(name, Errno::NOENT)),
                },
                Err(e) => return Err(self.io(name, e)),
            },
        };
        let r = file.write_all(bytes).and_then(|()| match sync {
            Sync::None => Ok(()),
            Sync::Data => {
                count_sync();
                file.sync_data()
            }
            Sync::All => sync_file(&file),
        });
        if let Err(e) = r {
            if created {
                drop(file);
                let _ = self.remove_file(name);
            } else {
                let _ = file.set_len(len);
            }
            return Err(Error::io(self.child(name), e));
        }
        Ok(Appended {
            name: name.to_owned(),
            len_before: len,
            created,
        })
    }

    /// Undoes an [`append`](Dir::append): cuts the file back to its old
    /// length, or removes it if the append created it.
    pub(super) fn undo_append(&self, a: &Appended) -> Result<()> {
        if a.created {
            return self.remove_file(&a.name).map(|_| ());
        }
        if let Some((f, _)) = self.open_file(&a.name, OFlags::WRONLY, Access::Write)? {
            f.set_len(a.len_before)
                .map_err(|e| Error::io(self.child(&a.name), e))?;
        }
        Ok(())
    }

    /// Creates the new file `name` (`O_CREAT | O_EXCL`: never follows or
    /// reuses anything that exists).
    fn create_file(&self, name: &str, flags: OFlags) -> std::result::Result<File, Errno> {
        let flags = flags | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOCTTY;
        rfs::openat(&self.fd, name, flags, Mode::from_raw_mode(FILE_MODE)).map(File::from)
    }

    /// Creates the new file `name` for writing (fails if anything has that name).
    pub(super) fn create_new(&self, name: &str) -> Result<File> {
        self.create_file(name, OFlags::WRONLY)
            .map_err(|e| self.io(name, e))
    }

    /// Writes `bytes` to a new temp file `.<target>.tmp.<random>` in this
    /// directory and returns its name; the caller renames it over `target`.
    pub(super) fn write_temp(&self, target: &str, bytes: &[u8], sync: bool) -> Result<String> {
        let tmp = format!(".{target}.tmp.{:016x}", fastrand::u64(..));
        let mut f = self.create_new(&tmp)?;
        let r = f
            .write_all(bytes)
            .and_then(|()| if sync { sync_file(&f) } else { Ok(()) });
        if let Err(e) = r {
            drop(f);
            let _ = self.remove_file(&tmp);
            return Err(Error::io(self.child(&tmp), e));
        }
        Ok(tmp)
    }

    /// Renames `from` (here) to `to` in `to_dir`, atomically replacing a
    /// regular file of that name. Refuses to replace anything else (a link,
    /// a directory, a FIFO). Something swapped in between the check and the
    /// rename is replaced (a rename never follows a link), never written to.
    ///
    /// `fresh`: `to_dir` was just created by the caller, so nothing is
    /// expected at `to` and the check is skipped (whatever appeared there
    /// meanwhile is replaced, never written through; a directory makes the
    /// rename fail).
    pub(super) fn rename(&self, from: &str, to_dir: &Dir, to: &str, fresh: bool) -> Result<()> {
        if !fresh
            && let Some(kind) = to_dir.file_type(to)?
            && kind != FileType::RegularFile
        {
            return Err(Access::Write.refuse(
                &to_dir.child(to),
                format!("{}; refusing to replace it", not_regular(kind)),
            ));
        }
        rfs::renameat(&self.fd, from, &to_dir.fd, to).map_err(|e| to_dir.io(to, e))
    }

    /// Removes the file (or link) `name`; `false` if it did not exist.
    pub(super) fn remove_file(&self, name: &str) -> Result<bool> {
        match rfs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(self.io(name, e)),
        }
    }

    /// Removes the empty directory `name`; `false` if it is not empty or missing.
    pub(super) fn remove_empty_dir(&self, name: &str) -> Result<bool> {
        match rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT | Errno::NOTEMPTY | Errno::EXIST) => Ok(false),
            Err(e) => Err(self.io(name, e)),
        }
    }

    /// Removes `name` and, if it is a directory, everything in it. Links are
    /// removed, never followed. `false` if nothing had that name.
    ///
    /// The directory is opened without a `stat` first (`O_DIRECTORY |
    /// O_NOFOLLOW` tells a directory from anything else, a link included).
    pub(super) fn remove_tree(&self, name: &str) -> Result<bool> {
        match self.openat_dir(name) {
            Ok(fd) => {
                Dir {
                    fd,
                    path: self.child(name),
                }
                .empty_out_fresh()?;
                self.remove_dir_entry(name)
            }
            Err(Errno::NOENT) => Ok(false),
            // Not a directory (Linux says ENOTDIR for a link, too).
            Err(Errno::NOTDIR | Errno::LOOP) => self.remove_file(name).map(|_| true),
            Err(e) => Err(self.io(name, e)),
        }
    }

    /// `rmdir` of `name`, whose contents were removed.
    fn remove_dir_entry(&self, name: &str) -> Result<bool> {
        match rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(true),
            Err(e) => Err(self.io(name, e)),
        }
    }

    /// Removes everything in this directory, just opened (its entries
    /// are read from the start without a rewind).
    fn empty_out_fresh(&self) -> Result<()> {
        for e in self.read_entries(false)? {
            if e.kind == Kind::Dir {
                self.remove_tree(&e.name)?;
            } else {
                self.remove_file(&e.name)?;
            }
        }
        Ok(())
    }
}

/// Cuts a torn final line (no trailing newline) off the file `file`
/// (`path` names it): what a writer killed mid-append leaves.
pub(super) fn cut_torn_tail(file: &mut File, len: u64, path: &Path, sync: bool) -> Result<()> {
    let io_err = |e: io::Error| Error::io(path, e);
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1)).map_err(io_err)?;
    file.read_exact(&mut last).map_err(io_err)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Find the last newline, reading backwards in chunks.
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    let mut keep = 0;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(io_err)?;
        file.read_exact(chunk).map_err(io_err)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    file.set_len(keep).map_err(io_err)?;
    if sync {
        sync_file(file).map_err(io_err)?;
    }
    Ok(())
}

/// Calls `f(line, "<location>:<n>")` for every complete, non-blank line of
/// `reader` (a trailing `\r` dropped). A final line without a newline is a
/// torn append and is skipped. A line longer than `max_line` bytes is
/// [`Error::Corrupt`] naming `location:n`; nothing is read past it. There is
/// no limit on the number of lines.
pub(super) fn for_each_line(
    mut reader: impl BufRead,
    location: &str,
    max_line: u64,
    mut f: impl FnMut(&[u8], &str) -> Result<()>,
) -> Result<()> {
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        n += 1;
        if !next_line(&mut reader, &mut buf, location, n, max_line)? {
            return Ok(());
        }
        let Some(line) = buf.strip_suffix(b"\n") else {
            // The torn final line of a killed writer.
            return Ok(());
        };
        if let Some(line) = line_content(line) {
            f(line, &format!("{location}:{n}"))?;
        }
    }
}

/// Reads a whole line file into memory as it is (torn final line included),
/// refusing a line longer than `max_line` bytes as soon as it is seen,
/// without reading the rest of it.
pub(super) fn read_line_file(
    mut reader: impl BufRead,
    location: &str,
    max_line: u64,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut n = 0u64;
    loop {
        n += 1;
        if !next_line(&mut reader, &mut out, location, n, max_line)? {
            return Ok(out);
        }
    }
}

/// Appends line `n` of `reader` (newline included, if it has one) to `buf`;
/// `false` at the end of the input. A line longer than `max_line` bytes is
/// [`Error::Corrupt`] naming `location:n`.
fn next_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    location: &str,
    n: u64,
    max_line: u64,
) -> Result<bool> {
    let start = buf.len();
    let read = reader
        .take(max_line.saturating_add(1))
        .read_until(b'\n', buf)
        .map_err(|e| Error::io(location, e))?;
    if read == 0 {
        return Ok(false);
    }
    if buf.last() != Some(&b'\n') && (buf.len() - start) as u64 > max_line {
        return Err(Error::corrupt(
            format!("{location}:{n}"),
            format!("line is longer than the {max_line} byte limit"),
        ));
    }
    Ok(true)
}

/// `fsync` of a file (every file sync of the driver goes through here or
/// [`Dir::sync`], so tests can count them).
pub(super) fn sync_file(file: &File) -> std::io::Result<()> {
    count_sync();
    file.sync_all()
}

#[cfg(test)]
thread_local! {
    /// `fsync`/`fdatasync` calls made on this thread (tests only).
    pub(super) static SYNCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[inline]
fn count_sync() {
    #[cfg(test)]
    SYNCS.with(|c| c.set(c.get() + 1));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max_line: u64) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for_each_line(input, "f", max_line, |line, loc| {
            out.push((String::from_utf8_lossy(line).into_owned(), loc.to_owned()));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn lines_are_numbered_blank_lines_skipped_torn_tail_ignored() {
        let got = lines(b"a\n\n  \r\nb\r\nc", 8).unwrap();
        let want = [("a", "f:1"), ("b", "f:4")];
        assert_eq!(got.len(), want.len());
        for ((l, loc), (wl, wloc)) in got.iter().zip(want) {
            assert_eq!((l.as_str(), loc.as_str()), (wl, wloc));
        }
    }

    #[test]
    fn a_line_longer_than_the_cap_is_corrupt() {
        assert_eq!(lines(b"12345678\n", 8).unwrap().len(), 1);
        let err = lines(b"ok\n123456789\n", 8).unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { ref location, .. } if location == "f:2"),
            "{err:?}"
        );
        // Also without a newline: not a torn tail once it is too long.
        assert!(lines(b"ok\n123456789", 8).is_err());
        let whole = read_line_file(&b"ab\ncd"[..], "f", 8).unwrap();
        assert_eq!(whole, b"ab\ncd");
        assert!(read_line_file(&b"ab\n0123456789\n"[..], "f", 8).is_err());
    }

    #[test]
    fn reads_are_capped_by_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("doc.json"), b"0123456789").unwrap();
        let d = Dir::open_base(tmp.path()).unwrap();
        assert_eq!(d.read_file("doc.json", 10).unwrap().unwrap(), b"0123456789");
        let err = d.read_file("doc.json", 9).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("doc.json"), "{err}");
        assert!(d.read_file("missing.json", 9).unwrap().is_none());
        // A directory where a file is expected.
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        let err = d.read_file("sub", 9).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }
}
