//! What the CPU identity digests: whatever makes XNNPACK choose its
//! microkernels (and so its packed layouts) on this machine. Each word list
//! starts with a tag naming how it was read, so two methods never collide.

/// x86 and x86-64, any OS: CPUID and the register state the OS enables.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
pub(crate) fn cpu_words() -> Vec<u64> {
    #[cfg(target_arch = "x86")]
    use core::arch::x86::{__cpuid, __cpuid_count};
    #[cfg(target_arch = "x86_64")]
    use core::arch::x86_64::{__cpuid, __cpuid_count};
    // CPUID exists on every x86-64 processor and on every x86 one Rust's
    // i686 targets run on (safe intrinsics since Rust 1.87).
    let leaf0 = __cpuid(0);
    let mut words = vec![1, leaf0.ebx as u64, leaf0.edx as u64, leaf0.ecx as u64];
    let leaf1 = __cpuid(1);
    // Family and model (not stepping), and the feature flags.
    words.extend([(leaf1.eax & 0x0FFF_3FF0) as u64, leaf1.ecx as u64, leaf1.edx as u64]);
    if leaf0.eax >= 7 {
        // Leaf 7 exists when the maximum leaf is at least 7; sub-leaf 1 reads
        // as zeros where unsupported.
        let (l7, l71) = (__cpuid_count(7, 0), __cpuid_count(7, 1));
        words.extend([l7.ebx as u64, l7.ecx as u64, l7.edx as u64, l71.eax as u64]);
    }
    // Which register states the OS saves decides whether AVX / AVX-512 are usable.
    const OSXSAVE: u32 = 1 << 27;
    if leaf1.ecx & OSXSAVE != 0 {
        words.push(xcr0());
    }
    words
}

#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV with ECX = 0 is valid whenever CPUID reports OSXSAVE,
    // which the caller checked; it only reads a register.
    unsafe { core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    ((hi as u64) << 32) | lo as u64
}

/// Arm on Linux and Android: the kernel's hardware capabilities and, where
/// readable, the main ID register (XNNPACK also picks kernels by core).
#[cfg(all(any(target_arch = "aarch64", target_arch = "arm"), any(target_os = "linux", target_os = "android")))]
#[allow(clippy::unnecessary_cast)] // c_ulong is 64 bits on aarch64, 32 on arm
pub(crate) fn cpu_words() -> Vec<u64> {
    // SAFETY: getauxval only reads the auxiliary vector.
    let (hwcap, hwcap2) = unsafe { (libc::getauxval(libc::AT_HWCAP), libc::getauxval(libc::AT_HWCAP2)) };
    let midr = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/regs/identification/midr_el1")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    // Tag 2 as before for aarch64 (files made so far stay valid); 4 for 32-bit Arm.
    let tag = if cfg!(target_arch = "aarch64") { 2 } else { 4 };
    vec![tag, hwcap as u64, hwcap2 as u64, midr]
}

/// Arm on Apple: the core family and sub-family, and every feature flag the
/// kernel publishes under `hw.optional`.
#[cfg(all(target_arch = "aarch64", target_vendor = "apple"))]
pub(crate) fn cpu_words() -> Vec<u64> {
    const FEATURES: &[&core::ffi::CStr] = &[
        c"hw.optional.neon",
        c"hw.optional.neon_fp16",
        c"hw.optional.armv8_crc32",
        c"hw.optional.armv8_2_fhm",
        c"hw.optional.arm.FEAT_FP16",
        c"hw.optional.arm.FEAT_DotProd",
        c"hw.optional.arm.FEAT_I8MM",
        c"hw.optional.arm.FEAT_BF16",
        c"hw.optional.arm.FEAT_FHM",
        c"hw.optional.arm.FEAT_SME",
        c"hw.optional.arm.FEAT_SME2",
        c"hw.optional.arm.FEAT_SVE",
    ];
    let mut words = vec![5, sysctl_u64(c"hw.cpufamily"), sysctl_u64(c"hw.cpusubfamily")];
    let mut flags = 0u64;
    for (i, name) in FEATURES.iter().enumerate() {
        if sysctl_u64(name) != 0 {
            flags |= 1 << i;
        }
    }
    words.push(flags);
    words
}

/// An integer `sysctl` value (0 when the name does not exist on this OS version).
#[cfg(all(target_arch = "aarch64", target_vendor = "apple"))]
fn sysctl_u64(name: &core::ffi::CStr) -> u64 {
    let mut buf = [0u8; 8];
    let mut len = buf.len();
    // SAFETY: sysctlbyname writes at most `len` bytes into `buf` and updates `len`.
    let rc = unsafe { libc::sysctlbyname(name.as_ptr(), buf.as_mut_ptr().cast(), &mut len, core::ptr::null_mut(), 0) };
    match (rc, len) {
        (0, 4) => u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as u64,
        (0, 8) => u64::from_ne_bytes(buf),
        _ => 0,
    }
}

/// Arm on Windows: the processor features the OS reports.
#[cfg(all(target_arch = "aarch64", windows))]
pub(crate) fn cpu_words() -> Vec<u64> {
    super::windows::arm_features()
}

/// Anything else: what the kernel lists, if it is Linux-like.
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    all(any(target_arch = "aarch64", target_arch = "arm"), any(target_os = "linux", target_os = "android")),
    all(target_arch = "aarch64", target_vendor = "apple"),
    all(target_arch = "aarch64", windows),
)))]
pub(crate) fn cpu_words() -> Vec<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = info.lines().filter(|l| l.starts_with("flags") || l.starts_with("Features") || l.starts_with("isa")).take(1).collect();
    vec![3, crate::format::checksum(flags.concat().as_bytes())]
}
