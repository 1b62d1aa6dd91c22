//! Member offsets of kernel structures, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`): what the tracing programs need to read an `sk_buff`
//! without compiling against this kernel's headers.
//!
//! Only the part of the format a lookup needs: the header, the type section (each kind's
//! size, to step over it) and the string section. A member path like `sock.__sk_common.skc_net`
//! walks named members and looks through anonymous structs and unions (the kernel groups
//! many `sk_buff` fields in them). aya parses BTF too but does not expose member offsets.

use std::collections::HashMap;
use std::path::Path;

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not BTF, or cut short.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// No struct of that name, or no such member.
    #[error("BTF has no {0}")]
    Missing(String),
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    /// Bit offset within the struct.
    bits: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: u32,
    /// The referenced type (typedef, const, ...).
    ty: u32,
    members: Vec<Member>,
}

/// A parsed BTF blob: its types (ids from 1) and strings.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("cut short"))
}

impl Btf {
    /// The running kernel's BTF.
    pub fn kernel() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    /// The BTF in a file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(b: &[u8]) -> Result<Self, BtfError> {
        if b.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Malformed("bad magic (or not little-endian)"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let types_at = hdr_len + type_off;
        let tsec = b
            .get(types_at..types_at + type_len)
            .ok_or(BtfError::Malformed("type section outside the blob"))?;
        let strings = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section outside the blob"))?
            .to_vec();
        // Type id 0 is void.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            ty: 0,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < tsec.len() {
            let name = u32_at(tsec, at)?;
            let info = u32_at(tsec, at + 4)?;
            let size_or_type = u32_at(tsec, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4, // int, var, decl_tag
                3 => 12,          // array
                KIND_STRUCT | KIND_UNION => {
                    for m in 0..vlen {
                        let p = at + m * 12;
                        let off = u32_at(tsec, p + 8)?;
                        members.push(Member {
                            name: u32_at(tsec, p)?,
                            ty: u32_at(tsec, p + 4)?,
                            bits: if kflag { off & 0x00ff_ffff } else { off },
                        });
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,   // enum, func_proto
                15 | 19 => vlen * 12, // datasec, enum64
                0 | 2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            at += extra;
            types.push(Type {
                name,
                kind,
                ty: size_or_type,
                members,
            });
        }
        let mut btf = Self {
            types,
            strings,
            structs: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                let name = btf.string(t.name).to_owned();
                // The first definition wins (modules may repeat a name).
                btf.structs.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> &str {
        let tail = self.strings.get(off as usize..).unwrap_or_default();
        let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the type itself.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.ty
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// The bit offset of a member named `name` inside the struct or union `t`, looking
    /// through anonymous members; with the member's type.
    fn member(&self, t: &Type, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            if m.name != 0 && self.string(m.name) == name {
                return Some((m.bits, m.ty));
            }
        }
        for m in t.members.iter().filter(|m| m.name == 0) {
            let inner = self.resolve(m.ty)?;
            if matches!(inner.kind, KIND_STRUCT | KIND_UNION) {
                if let Some((bits, ty)) = self.member(inner, name, depth + 1) {
                    return Some((m.bits + bits, ty));
                }
            }
        }
        None
    }

    /// The byte offset of `path` (`struct.member[.member...]`), e.g. `sk_buff.data` or
    /// `net.ns.inum`.
    pub fn offset(&self, path: &str) -> Result<u32, BtfError> {
        let missing = || BtfError::Missing(path.to_owned());
        let mut parts = path.split('.');
        let root = parts.next().ok_or_else(missing)?;
        let mut t = self
            .structs
            .get(root)
            .and_then(|&id| self.types.get(id as usize))
            .ok_or_else(missing)?;
        let mut bits = 0;
        let mut any = false;
        for part in parts {
            let (b, ty) = self.member(t, part, 0).ok_or_else(missing)?;
            bits += b;
            any = true;
            if let Some(next) = self.resolve(ty) {
                t = next;
            }
        }
        if !any || bits % 8 != 0 {
            return Err(missing());
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made blob: `struct inner { int a; int b; }`, `struct outer { int x; union {
    /// struct inner in; }; struct inner named; }` (the union anonymous).
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0a\0b\0inner\0outer\0x\0in\0named\0".to_vec();
        let s = |name: &str| -> u32 {
            let hay = &strings;
            let needle: Vec<u8> = std::iter::once(0).chain(name.bytes()).chain([0]).collect();
            hay.windows(needle.len())
                .position(|w| w == needle.as_slice())
                .map(|p| p as u32 + 1)
                .expect("name")
        };
        let mut t = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| t.extend(w.to_le_bytes()));
        // 1: int (kind 1), 4 bytes + its extra word.
        push(&[s("int"), 1 << 24, 4, 32]);
        // 2: struct inner { a @0, b @32 bits }
        push(&[s("inner"), (4 << 24) | 2, 8, s("a"), 1, 0, s("b"), 1, 32]);
        // 3: anonymous union { in: inner @0 }
        push(&[0, (5 << 24) | 1, 8, s("in"), 2, 0]);
        // 4: struct outer { x @0, <anon union> @64, named @128 }
        push(&[
            s("outer"),
            (4 << 24) | 3,
            24,
            s("x"),
            1,
            0,
            0,
            3,
            64,
            s("named"),
            2,
            128,
        ]);
        let mut b = Vec::new();
        b.extend([0x9f, 0xeb, 1, 0]);
        b.extend(24u32.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend((t.len() as u32).to_le_bytes());
        b.extend((t.len() as u32).to_le_bytes());
        b.extend((strings.len() as u32).to_le_bytes());
        b.extend(t);
        b.extend(strings);
        b
    }

    #[test]
    fn offsets_walk_named_and_anonymous_members() {
        let btf = Btf::parse(&blob()).expect("parse");
        assert_eq!(btf.offset("outer.x").expect("x"), 0);
        assert_eq!(
            btf.offset("outer.in").expect("through the anonymous union"),
            8
        );
        assert_eq!(btf.offset("outer.in.b").expect("nested"), 12);
        assert_eq!(btf.offset("outer.named.b").expect("named"), 20);
        assert!(matches!(
            btf.offset("outer.nope"),
            Err(BtfError::Missing(_))
        ));
        assert!(matches!(btf.offset("nope.x"), Err(BtfError::Missing(_))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Btf::parse(b"").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut cut = blob();
        cut.truncate(40);
        assert!(Btf::parse(&cut).is_err());
    }

    #[test]
    fn the_running_kernel_has_every_field_the_programs_read() {
        let Ok(btf) = Btf::kernel() else {
            eprintln!("no /sys/kernel/btf/vmlinux: skipped");
            return;
        };
        for f in super::super::FIELDS {
            btf.offset(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        // sk_buff.data is a pointer after the head/tail/end fields: never at 0.
        assert!(btf.offset("sk_buff.data").expect("data") > 0);
    }
}
