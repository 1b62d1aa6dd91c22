//! The one trick that keeps a bound LLVM could prove redundant in a program for the
//! verifier; shared by the XDP program and the tracing programs.

/// `v`, with everything LLVM knows about its range forgotten (so that a mask it could
/// prove redundant stays in the program for the verifier): a volatile store and load of a
/// stack slot.
#[inline(always)]
pub(crate) fn opaque(v: usize) -> usize {
    let mut slot = v;
    // SAFETY: a local variable, read and written in place.
    unsafe {
        core::ptr::write_volatile(&mut slot, v);
        core::ptr::read_volatile(&slot)
    }
}
