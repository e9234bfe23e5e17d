//! Sending and receiving bytes with file descriptors attached (`SCM_RIGHTS`) on a unix stream
//! socket. The only unsafe code of the protocol: taking ownership of received descriptors.

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// The kernel's limit on descriptors in one `SCM_RIGHTS` message (`SCM_MAX_FD`). Room for that
/// many means a control message is never truncated, so no received descriptor can leak.
const SCM_MAX_FD: usize = 253;

/// A byte source that may deliver file descriptors along with the bytes.
pub trait RecvFds {
    /// Read up to `buf.len()` bytes (0 = end of stream), appending received descriptors to `fds`.
    fn recv_fds(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> std::io::Result<usize>;
}

impl RecvFds for UnixStream {
    fn recv_fds(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> std::io::Result<usize> {
        let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = loop {
            match recvmsg::<()>(
                self.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r.map_err(std::io::Error::from)?,
            }
        };
        let n = msg.bytes;
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel just installed `fd` in this process for this message
                    // (SCM_RIGHTS); nothing else knows it, so this is its only owner.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Ok(n)
    }
}

/// A byte slice as a source (tests and fuzzing): never any descriptors.
impl RecvFds for &[u8] {
    fn recv_fds(&mut self, buf: &mut [u8], _fds: &mut Vec<OwnedFd>) -> std::io::Result<usize> {
        std::io::Read::read(self, buf)
    }
}

/// Send all of `bytes`, with `fds` attached to the first byte.
pub fn send_all_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if sent == 0 && !fds.is_empty() {
            &rights
        } else {
            &[]
        };
        let remaining = bytes.get(sent..).unwrap_or_default();
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(remaining)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
