//! Pseudo-terminals for processes started with [`crate::ProcessSpec::tty`]: making one
//! on the host, receiving the master side of one made inside a container (libcontainer
//! sends it over a Unix socket), and setting its window size.
//!
//! The helper holds the master side: what the process writes to its terminal is read
//! from it (as stdout; a terminal has no separate stderr), input is written to it, and
//! a resize is an ioctl on it, which also sends SIGWINCH to the terminal's foreground
//! process group.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::pty::Winsize;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::spec::TtySize;

/// The byte a terminal in canonical mode reads as end of input (`^D`, the default
/// `VEOF`): what closing a terminal process's input means.
pub const EOF: u8 = 0x04;

fn winsize(size: TtySize) -> Winsize {
    Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A new terminal of `size` on the host: `(master, slave)`, both closed on exec.
pub fn open(size: TtySize) -> io::Result<(OwnedFd, OwnedFd)> {
    let pty = nix::pty::openpty(Some(&winsize(size)), None).map_err(io::Error::from)?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(io::Error::from)?;
    }
    Ok((pty.master, pty.slave))
}

/// Sets the window size of the terminal whose master (or slave) is `fd`.
pub fn set_size(fd: impl AsFd, size: TtySize) -> io::Result<()> {
    let ws = winsize(size);
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from the pointer, which points to
    // `ws`, alive for the whole call; the descriptor is borrowed, so it stays open.
    let result = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one file descriptor sent with `SCM_RIGHTS` on `stream` (the master side of
/// a terminal that libcontainer made in a container). Blocks up to the stream's read
/// timeout.
pub fn receive_fd(stream: &UnixStream) -> io::Result<OwnedFd> {
    let mut name = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let message = loop {
        match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => break message,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    };
    let mut received: Vec<OwnedFd> = Vec::new();
    for cmsg in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in this process for this
                // message; nothing else owns it, so it is owned from here on.
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    // Any extra descriptor is closed as `received` drops.
    if received.is_empty() {
        let what = if message.bytes == 0 {
            "the process closed its console socket without sending its terminal"
        } else {
            "the console socket message carried no file descriptor"
        };
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, what));
    }
    Ok(received.swap_remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_has_the_size_it_was_given_and_set() {
        let (master, slave) = open(TtySize { rows: 24, cols: 80 }).unwrap();
        assert!(
            nix::sys::termios::tcgetattr(&slave).is_ok(),
            "the slave is a terminal"
        );
        let read = |fd: &OwnedFd| {
            let mut ws = winsize(TtySize { rows: 0, cols: 0 });
            // SAFETY: TIOCGWINSZ writes one `struct winsize` to `ws`, alive here.
            let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
            assert_eq!(r, 0);
            (ws.ws_row, ws.ws_col)
        };
        assert_eq!(read(&slave), (24, 80));
        set_size(
            &master,
            TtySize {
                rows: 50,
                cols: 132,
            },
        )
        .unwrap();
        assert_eq!(read(&slave), (50, 132));
    }

    #[test]
    fn a_descriptor_passes_over_a_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let (master, _slave) = open(TtySize { rows: 1, cols: 1 }).unwrap();
        let fds = [master.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"/dev/ptmx")];
        nix::sys::socket::sendmsg::<()>(
            a.as_raw_fd(),
            &iov,
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let got = receive_fd(&b).unwrap();
        set_size(&got, TtySize { rows: 3, cols: 4 }).unwrap();
        drop(a);
        assert!(receive_fd(&b).is_err(), "a closed socket sends no terminal");
    }
}
