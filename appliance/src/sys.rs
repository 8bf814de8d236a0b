//! Thin, checked wrappers of the system calls the init needs.

use std::ffi::CString;

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// mount(2).
pub fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> Result<(), String> {
    let (s, t, f, d) = (cstr(src), cstr(target), cstr(fstype), cstr(data));
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!("mount {fstype} on {target}: {}", std::io::Error::last_os_error()))
    }
}

/// umount2(2).
pub fn umount(target: &str) -> Result<(), String> {
    let t = cstr(target);
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(t.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(format!("umount {target}: {}", std::io::Error::last_os_error()))
    }
}

/// init_module(2) with the module's bytes and parameters ("name=value …").
pub fn load_module(image: &[u8], params: &str) -> Result<(), std::io::Error> {
    let params = cstr(params);
    // SAFETY: `image` is a live buffer of `len` bytes and `params` a valid C string.
    let r = unsafe { libc::syscall(libc::SYS_init_module, image.as_ptr(), image.len(), params.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// kexec_file_load(2): load `kernel` and `initrd` (open files) to be started by
/// `reboot(LINUX_REBOOT_CMD_KEXEC)`, with `cmdline`.
pub fn kexec_file_load(kernel: &std::fs::File, initrd: &std::fs::File, cmdline: &str) -> Result<(), std::io::Error> {
    use std::os::fd::AsRawFd;
    let c = cstr(cmdline);
    let len = c.as_bytes_with_nul().len();
    // SAFETY: two open file descriptors, and a NUL-terminated string of `len` bytes that lives
    // across the call.
    let r = unsafe { libc::syscall(libc::SYS_kexec_file_load, kernel.as_raw_fd(), initrd.as_raw_fd(), len, c.as_ptr(), 0usize) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// sethostname(2).
pub fn set_hostname(name: &str) {
    // SAFETY: pointer and length describe `name`'s bytes.
    unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
}

/// Install a handler that only stores into an atomic.
pub fn on_signal(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: the handler is async-signal-safe (it only stores to an atomic).
    unsafe { libc::signal(sig, handler as *const () as libc::sighandler_t) };
}

/// Reap one exited child, if any: (pid, status).
pub fn reap() -> Option<(i32, i32)> {
    let mut status = 0;
    // SAFETY: `status` is a valid int for the kernel to fill.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

/// sync(2).
pub fn sync() {
    // SAFETY: no arguments.
    unsafe { libc::sync() };
}

/// reboot(2) with a LINUX_REBOOT_CMD_*.
pub fn reboot(cmd: libc::c_int) {
    // SAFETY: plain system call; only returns on failure.
    unsafe { libc::reboot(cmd) };
}
