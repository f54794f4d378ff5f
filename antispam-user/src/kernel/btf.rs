//! A small, self-contained reader of kernel BTF (`/sys/kernel/btf/vmlinux`), enough to find the
//! byte offset of a named member of a named struct or union. Rust eBPF programs have no CO-RE
//! relocations, so the agent computes the offsets here and passes them to the programs as
//! load-time globals.
//!
//! Format: <https://docs.kernel.org/bpf/btf.html>. A blob is a header, a type section and a
//! string section. Type ids start at 1 (0 is `void`); each type is a 12-byte `btf_type`
//! followed by kind-specific trailing data, which must be skipped exactly to find the next type.
//! The blob is in the byte order of the machine that produced it; the magic tells which.
//!
//! Only `std` and `thiserror` are used.

use std::{fmt, path::Path};

/// Where the running kernel exposes its own BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
/// Resolving typedef/const/volatile chains deeper than this means a loop (malformed BTF).
const MAX_CHAIN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not BTF: bad magic {0:#06x}")]
    BadMagic(u16),
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("BTF type #{id} has unknown kind {kind}")]
    UnknownKind { id: u32, kind: u32 },
    #[error("no struct or union named `{0}` in BTF")]
    NoSuchType(String),
    #[error("`{ty}` has no member `{member}`")]
    NoSuchMember { ty: String, member: String },
    #[error("`{ty}.{member}` is not a struct or union, cannot descend into it")]
    NotComposite { ty: String, member: String },
    #[error("`{ty}.{member}` is a bitfield (bit offset {bit_offset}, {bits} bits), not byte-addressable")]
    Bitfield {
        ty: String,
        member: String,
        bit_offset: u32,
        bits: u32,
    },
}

/// BTF kinds (`BTF_KIND_*` in include/uapi/linux/btf.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Kind {
    Int = 1,
    Ptr = 2,
    Array = 3,
    Struct = 4,
    Union = 5,
    Enum = 6,
    Fwd = 7,
    Typedef = 8,
    Volatile = 9,
    Const = 10,
    Restrict = 11,
    Func = 12,
    FuncProto = 13,
    Var = 14,
    Datasec = 15,
    Float = 16,
    DeclTag = 17,
    TypeTag = 18,
    Enum64 = 19,
}

impl Kind {
    fn from_u32(k: u32) -> Option<Kind> {
        use Kind::*;
        Some(match k {
            1 => Int,
            2 => Ptr,
            3 => Array,
            4 => Struct,
            5 => Union,
            6 => Enum,
            7 => Fwd,
            8 => Typedef,
            9 => Volatile,
            10 => Const,
            11 => Restrict,
            12 => Func,
            13 => FuncProto,
            14 => Var,
            15 => Datasec,
            16 => Float,
            17 => DeclTag,
            18 => TypeTag,
            19 => Enum64,
            _ => return None,
        })
    }

    /// Bytes of kind-specific data after the 12-byte `btf_type` header.
    fn trailing_len(self, vlen: usize) -> usize {
        use Kind::*;
        match self {
            // u32: encoding, bit offset, bit size
            Int => 4,
            // struct btf_array { type, index_type, nelems }
            Array => 12,
            // struct btf_member { name_off, type, offset } per member
            Struct | Union => 12 * vlen,
            // struct btf_enum { name_off, val (s32) } per enumerator
            Enum => 8 * vlen,
            // struct btf_param { name_off, type } per parameter
            FuncProto => 8 * vlen,
            // struct btf_var { linkage }
            Var => 4,
            // struct btf_var_secinfo { type, offset, size } per variable
            Datasec => 12 * vlen,
            // struct btf_decl_tag { component_idx (s32) }
            DeclTag => 4,
            // struct btf_enum64 { name_off, val_lo32, val_hi32 } per enumerator
            Enum64 => 12 * vlen,
            // size/type only; FUNC's vlen is its linkage, not a count
            Ptr | Fwd | Typedef | Volatile | Const | Restrict | Func | Float | TypeTag => 0,
        }
    }
}

/// One type's header, decoded. `data` is the byte offset of its trailing data in `Btf::types`.
#[derive(Clone, Copy, Debug)]
struct Type {
    name_off: u32,
    kind: Kind,
    vlen: u16,
    kind_flag: bool,
    /// `size` for INT, ENUM, STRUCT, UNION, DATASEC, FLOAT, ENUM64; `type` for the others.
    size_or_type: u32,
    data: usize,
}

/// Where a member lives, in bits from the start of the outermost struct that was asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub bit_offset: u32,
    /// Non-zero for a bitfield.
    pub bitfield_size: u32,
    /// BTF type id of the member (unresolved: may be a typedef).
    pub type_id: u32,
}

impl Member {
    pub fn byte_offset(&self) -> Option<u32> {
        (self.bitfield_size == 0 && self.bit_offset.is_multiple_of(8))
            .then_some(self.bit_offset / 8)
    }
}

pub struct Btf {
    big_endian: bool,
    /// The type section.
    types_sec: Vec<u8>,
    /// The string section.
    strings: Vec<u8>,
    /// types[id - 1] is type `id`.
    types: Vec<Type>,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.types.len())
            .field("strings", &self.strings.len())
            .finish()
    }
}

fn malformed(s: impl Into<String>) -> Error {
    Error::Malformed(s.into())
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Btf, Error> {
        Btf::from_file(VMLINUX)
    }

    pub fn from_file(path: impl AsRef<Path>) -> Result<Btf, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Btf::parse(&bytes)
    }

    /// Parses a whole BTF blob (header, types, strings). Every type's trailing data is skipped
    /// exactly; the type section must end on a type boundary.
    pub fn parse(bytes: &[u8]) -> Result<Btf, Error> {
        if bytes.len() < 24 {
            return Err(malformed("shorter than the BTF header"));
        }
        let big_endian = match [bytes[0], bytes[1]] {
            m if u16::from_le_bytes(m) == MAGIC => false,
            m if u16::from_be_bytes(m) == MAGIC => true,
            m => return Err(Error::BadMagic(u16::from_le_bytes(m))),
        };
        let rd = |o: usize| read_u32(bytes, o, big_endian);
        let hdr_len = rd(4)? as usize;
        let (type_off, type_len) = (rd(8)? as usize, rd(12)? as usize);
        let (str_off, str_len) = (rd(16)? as usize, rd(20)? as usize);
        if hdr_len < 24 {
            return Err(malformed(format!("header length {hdr_len} < 24")));
        }
        let section = |off: usize, len: usize, what: &str| {
            let start = hdr_len
                .checked_add(off)
                .ok_or_else(|| malformed(format!("{what} offset overflows")))?;
            let end = start
                .checked_add(len)
                .ok_or_else(|| malformed(format!("{what} length overflows")))?;
            bytes.get(start..end).map(<[u8]>::to_vec).ok_or_else(|| {
                malformed(format!(
                    "{what} section {start}..{end} past end {}",
                    bytes.len()
                ))
            })
        };
        let types_sec = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;

        let mut types = Vec::new();
        let mut pos = 0usize;
        while pos < types_sec.len() {
            let id = types.len() as u32 + 1;
            let name_off = read_u32(&types_sec, pos, big_endian)?;
            let info = read_u32(&types_sec, pos + 4, big_endian)?;
            let size_or_type = read_u32(&types_sec, pos + 8, big_endian)?;
            let raw_kind = (info >> 24) & 0x1f;
            let kind = Kind::from_u32(raw_kind).ok_or(Error::UnknownKind { id, kind: raw_kind })?;
            let vlen = (info & 0xffff) as u16;
            let data = pos + 12;
            let end = data + kind.trailing_len(vlen as usize);
            if end > types_sec.len() {
                return Err(malformed(format!(
                    "type #{id} ({kind:?}) runs past the type section ({end} > {})",
                    types_sec.len()
                )));
            }
            types.push(Type {
                name_off,
                kind,
                vlen,
                kind_flag: info >> 31 == 1,
                size_or_type,
                data,
            });
            pos = end;
        }
        Ok(Btf {
            big_endian,
            types_sec,
            strings,
            types,
        })
    }

    /// Number of types (not counting `void`).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// How many types of each kind there are (for tests).
    #[cfg(test)]
    pub fn kind_counts(&self) -> std::collections::BTreeMap<Kind, usize> {
        let mut m = std::collections::BTreeMap::new();
        for t in &self.types {
            *m.entry(t.kind).or_insert(0) += 1;
        }
        m
    }

    fn u32_at(&self, o: usize) -> u32 {
        // In bounds: every trailing record was checked against the section when parsing.
        read_u32(&self.types_sec, o, self.big_endian).expect("checked at parse time")
    }

    fn ty(&self, id: u32) -> Result<&Type, Error> {
        id.checked_sub(1)
            .and_then(|i| self.types.get(i as usize))
            .ok_or_else(|| malformed(format!("type id {id} out of range")))
    }

    fn name(&self, off: u32) -> Result<&str, Error> {
        let rest = self
            .strings
            .get(off as usize..)
            .ok_or_else(|| malformed(format!("string offset {off} out of range")))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed("unterminated string"))?;
        std::str::from_utf8(&rest[..end]).map_err(|_| malformed("non-UTF-8 name"))
    }

    /// The first struct (or, failing that, union) called `name` that has a body. Forward
    /// declarations (FWD, or a STRUCT with no members and size 0) are skipped.
    pub fn composite_id(&self, name: &str) -> Result<u32, Error> {
        let mut union = None;
        for (i, t) in self.types.iter().enumerate() {
            if !matches!(t.kind, Kind::Struct | Kind::Union) || self.name(t.name_off)? != name {
                continue;
            }
            if t.vlen == 0 && t.size_or_type == 0 {
                continue;
            }
            match t.kind {
                Kind::Struct => return Ok(i as u32 + 1),
                _ => union = union.or(Some(i as u32 + 1)),
            }
        }
        union.ok_or_else(|| Error::NoSuchType(name.to_string()))
    }

    /// Follows TYPEDEF, CONST, VOLATILE, RESTRICT and TYPE_TAG to the underlying type.
    pub fn resolve(&self, mut id: u32) -> Result<u32, Error> {
        for _ in 0..MAX_CHAIN {
            if id == 0 {
                return Ok(0);
            }
            let t = self.ty(id)?;
            match t.kind {
                Kind::Typedef | Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        Err(malformed(format!(
            "type chain from #{id} too long (a loop?)"
        )))
    }

    /// Size in bytes of a type (after resolving modifiers); pointers are 8 bytes (the BPF
    /// target, and every 64-bit kernel).
    pub fn size_of(&self, id: u32) -> Result<u64, Error> {
        let id = self.resolve(id)?;
        if id == 0 {
            return Ok(0);
        }
        let t = *self.ty(id)?;
        Ok(match t.kind {
            Kind::Int
            | Kind::Struct
            | Kind::Union
            | Kind::Enum
            | Kind::Enum64
            | Kind::Float
            | Kind::Datasec => t.size_or_type as u64,
            Kind::Ptr => 8,
            Kind::Array => {
                let elem = self.u32_at(t.data);
                let n = self.u32_at(t.data + 8) as u64;
                n * self.size_of(elem)?
            }
            k => return Err(malformed(format!("type #{id} of kind {k:?} has no size"))),
        })
    }

    /// Finds `member` directly in composite `id` or inside its anonymous struct/union members,
    /// at any depth; the returned offset is relative to the start of `id`.
    fn find_in(&self, id: u32, member: &str) -> Result<Option<Member>, Error> {
        let t = *self.ty(id)?;
        debug_assert!(matches!(t.kind, Kind::Struct | Kind::Union));
        for i in 0..t.vlen as usize {
            let rec = t.data + 12 * i;
            let name_off = self.u32_at(rec);
            let type_id = self.u32_at(rec + 4);
            let raw = self.u32_at(rec + 8);
            let (mut bit_offset, mut bitfield_size) = if t.kind_flag {
                (raw & 0x00ff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            let name = self.name(name_off)?;
            if name.is_empty() {
                // Anonymous member: descend if it is a struct or union.
                let inner = self.resolve(type_id)?;
                if inner != 0 && matches!(self.ty(inner)?.kind, Kind::Struct | Kind::Union) {
                    if let Some(mut m) = self.find_in(inner, member)? {
                        m.bit_offset += bit_offset;
                        return Ok(Some(m));
                    }
                }
                continue;
            }
            if name != member {
                continue;
            }
            if !t.kind_flag {
                // Without kind_flag a bitfield is told by its INT type's encoding: bits 16..24
                // of the INT data are an extra bit offset, bits 0..8 the width.
                let inner = self.resolve(type_id)?;
                if inner != 0 {
                    let it = *self.ty(inner)?;
                    if it.kind == Kind::Int {
                        let enc = self.u32_at(it.data);
                        let (bits, off) = (enc & 0xff, (enc >> 16) & 0xff);
                        if off != 0 || bits != it.size_or_type * 8 {
                            bit_offset += off;
                            bitfield_size = bits;
                        }
                    }
                }
            }
            return Ok(Some(Member {
                bit_offset,
                bitfield_size,
                type_id,
            }));
        }
        Ok(None)
    }

    /// The member `path` of struct (or union) `ty`. `path` is a member name, or several joined
    /// with '.' to go through named nested structs (`"f_path.dentry"`); anonymous struct and
    /// union members are searched transparently at every step.
    pub fn member(&self, ty: &str, path: &str) -> Result<Member, Error> {
        let mut id = self.composite_id(ty)?;
        let mut base = 0u32;
        let mut found = None;
        let mut walked = ty.to_string();
        for (i, part) in path.split('.').enumerate() {
            if i > 0 {
                let m: Member = found.expect("set on the previous step");
                let inner = self.resolve(m.type_id)?;
                let composite =
                    inner != 0 && matches!(self.ty(inner)?.kind, Kind::Struct | Kind::Union);
                if !composite {
                    return Err(Error::NotComposite {
                        ty: ty.to_string(),
                        member: walked,
                    });
                }
                id = inner;
                base = m.bit_offset;
            }
            let mut m = self.find_in(id, part)?.ok_or_else(|| Error::NoSuchMember {
                ty: walked.clone(),
                member: part.to_string(),
            })?;
            m.bit_offset += base;
            walked = format!("{walked}.{part}");
            found = Some(m);
        }
        Ok(found.expect("split yields at least one part"))
    }

    /// Byte offset of `ty.path` (see [`Btf::member`]); an error for bitfields.
    pub fn offset_of(&self, ty: &str, path: &str) -> Result<u32, Error> {
        let m = self.member(ty, path)?;
        m.byte_offset().ok_or_else(|| Error::Bitfield {
            ty: ty.to_string(),
            member: path.to_string(),
            bit_offset: m.bit_offset,
            bits: m.bitfield_size,
        })
    }

    /// Byte offset and size of `ty.path`, for callers that check the field's width.
    pub fn field(&self, ty: &str, path: &str) -> Result<(u32, u64), Error> {
        let off = self.offset_of(ty, path)?;
        let m = self.member(ty, path)?;
        Ok((off, self.size_of(m.type_id)?))
    }
}

fn read_u32(b: &[u8], o: usize, big_endian: bool) -> Result<u32, Error> {
    let s: [u8; 4] = b
        .get(o..o + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| malformed(format!("read of 4 bytes at {o} past end {}", b.len())))?;
    Ok(if big_endian {
        u32::from_be_bytes(s)
    } else {
        u32::from_le_bytes(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Option<Btf> {
        if !Path::new(VMLINUX).exists() {
            eprintln!("SKIP: {VMLINUX} missing");
            return None;
        }
        Some(Btf::from_sys_fs().expect("parsing the live vmlinux BTF"))
    }

    /// `bpftool btf dump file vmlinux format raw` as an independent reference, if installed.
    fn bpftool_member(ty: &str, member: &str) -> Option<(u32, u32)> {
        let out = std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX, "format", "raw"])
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let mut inside = false;
        for line in text.lines() {
            if line.starts_with('[') {
                inside = line.contains(&format!("] STRUCT '{ty}' size="));
                continue;
            }
            if inside && line.trim_start().starts_with(&format!("'{member}' ")) {
                let num = |key: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(key))
                        .and_then(|v| v.parse().ok())
                };
                return Some((num("bits_offset=")?, num("bitfield_size=").unwrap_or(0)));
            }
        }
        None
    }

    #[test]
    fn live_vmlinux_parses_to_the_end_with_every_kind() {
        let Some(btf) = live() else { return };
        assert!(btf.len() > 10_000, "{} types", btf.len());
        let counts = btf.kind_counts();
        // A 6.x vmlinux has every kind; check the ones every BTF kernel has, and print all.
        eprintln!("{counts:?}");
        for k in [
            Kind::Int,
            Kind::Ptr,
            Kind::Array,
            Kind::Struct,
            Kind::Union,
            Kind::Enum,
            Kind::Typedef,
            Kind::Const,
            Kind::Func,
            Kind::FuncProto,
        ] {
            assert!(counts.get(&k).copied().unwrap_or(0) > 0, "no {k:?}");
        }
        // Cross-check with bpftool's count of types, when bpftool is there.
        if let Ok(out) = std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX, "format", "raw"])
            .output()
        {
            let n = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with('['))
                .count();
            if n > 0 {
                assert_eq!(n, btf.len());
            }
        }
    }

    #[test]
    fn live_offsets_the_exec_guard_needs() {
        let Some(btf) = live() else { return };
        for (ty, member, size) in [
            ("linux_binprm", "file", 8),
            ("file", "f_inode", 8),
            ("inode", "i_ino", 8),
            ("inode", "i_sb", 8),
            ("super_block", "s_dev", 4),
            ("task_struct", "real_parent", 8),
            ("task_struct", "tgid", 4),
            ("task_struct", "comm", 16),
        ] {
            let (off, sz) = btf.field(ty, member).unwrap();
            assert_eq!(sz, size, "{ty}.{member} size");
            assert!(off as u64 + sz <= btf.size_of(btf.composite_id(ty).unwrap()).unwrap());
            if let Some((bits, 0)) = bpftool_member(ty, member) {
                assert_eq!(off * 8, bits, "{ty}.{member} against bpftool");
            }
        }
        // ABI-stable layouts.
        assert_eq!(btf.offset_of("list_head", "next").unwrap(), 0);
        assert_eq!(btf.offset_of("list_head", "prev").unwrap(), 8);
        assert_eq!(btf.offset_of("iphdr", "saddr").unwrap(), 12);
    }

    #[test]
    fn live_anonymous_members_and_nested_paths() {
        let Some(btf) = live() else { return };
        // inode: union { const unsigned int i_nlink; unsigned int __i_nlink; };
        let a = btf.offset_of("inode", "i_nlink").unwrap();
        let b = btf.offset_of("inode", "__i_nlink").unwrap();
        assert_eq!(a, b);
        // iphdr's saddr/daddr sit in an anonymous union (__struct_group) since 6.x
        assert_eq!(btf.offset_of("iphdr", "daddr").unwrap(), 16);
        // a named nested path
        let fp = btf.offset_of("file", "f_path").unwrap();
        let d = btf.offset_of("path", "dentry").unwrap();
        assert_eq!(btf.offset_of("file", "f_path.dentry").unwrap(), fp + d);
        assert!(matches!(
            btf.offset_of("file", "f_inode.i_ino"),
            Err(Error::NotComposite { .. })
        ));
        assert!(matches!(
            btf.offset_of("task_struct", "no_such_member"),
            Err(Error::NoSuchMember { .. })
        ));
        assert!(matches!(
            btf.offset_of("no_such_struct_xyz", "a"),
            Err(Error::NoSuchType(_))
        ));
    }

    #[test]
    fn live_bitfields() {
        let Some(btf) = live() else { return };
        // task_struct: unsigned sched_reset_on_fork:1; (a kind_flag bitfield)
        let m = btf.member("task_struct", "sched_reset_on_fork").unwrap();
        assert_eq!(m.bitfield_size, 1);
        if let Some((bits, size)) = bpftool_member("task_struct", "sched_reset_on_fork") {
            assert_eq!((m.bit_offset, m.bitfield_size), (bits, size));
        }
        assert!(matches!(
            btf.offset_of("task_struct", "sched_reset_on_fork"),
            Err(Error::Bitfield { .. })
        ));
    }

    // ---- a synthetic blob, to exercise every kind's trailing data and both bitfield encodings

    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                types: vec![],
                strings: vec![0],
                next_id: 1,
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn w(&mut self, v: u32) {
            self.types.extend_from_slice(&v.to_le_bytes());
        }
        fn ty(&mut self, name: &str, kind: u32, kflag: bool, vlen: u32, st: u32) -> u32 {
            let n = self.s(name);
            self.w(n);
            self.w((kflag as u32) << 31 | kind << 24 | vlen);
            self.w(st);
            self.next_id += 1;
            self.next_id - 1
        }
        fn finish(self) -> Vec<u8> {
            let mut b = vec![];
            b.extend_from_slice(&MAGIC.to_le_bytes());
            b.extend_from_slice(&[1, 0]);
            for v in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&self.types);
            b.extend_from_slice(&self.strings);
            b
        }
    }

    fn synthetic() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.ty("int", 1, false, 0, 4); // 1
        b.w(32); // encoding: signed? no; 32 bits at offset 0
        let ptr = b.ty("", 2, false, 0, int); // 2
        let arr = b.ty("", 3, false, 0, 0); // 3: int[16]
        b.w(int);
        b.w(int);
        b.w(16);
        let en = b.ty("e", 6, false, 2, 4); // 4
        for v in [0u32, 1] {
            let n = b.s("E");
            b.w(n);
            b.w(v);
        }
        b.ty("fwd", 7, false, 0, 0); // 5
        let td = b.ty("int_t", 8, false, 0, int); // 6
        let vol = b.ty("", 9, false, 0, td); // 7
        let cst = b.ty("", 10, false, 0, vol); // 8
        b.ty("", 11, false, 0, ptr); // 9
        let fp = b.ty("", 13, false, 2, int); // 10
        for _ in 0..2 {
            b.w(0);
            b.w(int);
        }
        b.ty("f", 12, false, 1, fp); // 11
        let var = b.ty("v", 14, false, 0, int); // 12
        b.w(1);
        b.ty(".data", 15, false, 1, 4); // 13
        b.w(var);
        b.w(0);
        b.w(4);
        b.ty("double", 16, false, 0, 8); // 14
        b.ty("tag", 17, false, 0, 11); // 15
        b.w(u32::MAX); // component_idx -1
        let tt = b.ty("user", 18, false, 0, int); // 16
        b.ty("e64", 19, false, 1, 8); // 17
        let n = b.s("X");
        b.w(n);
        b.w(1);
        b.w(2);
        // 18: an INT bitfield type (no kind_flag encoding): 3 bits at extra offset 2
        let bf = b.ty("u8bf", 1, false, 0, 1);
        b.w(2 << 16 | 3);
        // 19: anonymous union { int a; int b; }
        let anon = b.ty("", 5, false, 2, 4);
        for m in ["a", "b"] {
            let n = b.s(m);
            b.w(n);
            b.w(int);
            b.w(0);
        }
        // 20: struct inner { int x; int y; }
        let inner = b.ty("inner", 4, false, 2, 8);
        for (m, o) in [("x", 0u32), ("y", 32)] {
            let n = b.s(m);
            b.w(n);
            b.w(int);
            b.w(o);
        }
        // 21: struct outer (no kind_flag) { int first; <anon union>; const volatile int_t c;
        //       int arr[16]; struct inner in; enum e en; old-style bitfield; user int tt }
        let mems: [(&str, u32, u32); 8] = [
            ("first", int, 0),
            ("", anon, 32),
            ("c", cst, 64),
            ("arr", arr, 96),
            ("in", inner, 608),
            ("en", en, 672),
            ("obf", bf, 704),
            ("tt", tt, 712),
        ];
        b.ty("outer", 4, false, mems.len() as u32, 96);
        for (m, t, o) in mems {
            let n = b.s(m);
            b.w(n);
            b.w(t);
            b.w(o);
        }
        // 22: struct kf (kind_flag) { int a:5 at bit 3; int full at 32 }
        b.ty("kf", 4, true, 2, 8);
        for (m, o) in [("a", 5 << 24 | 3u32), ("full", 32)] {
            let n = b.s(m);
            b.w(n);
            b.w(int);
            b.w(o);
        }
        b.finish()
    }

    #[test]
    fn synthetic_every_kind_and_bitfields() {
        let btf = Btf::parse(&synthetic()).unwrap();
        assert_eq!(btf.len(), 22);
        assert_eq!(btf.kind_counts().len(), 19, "all 19 kinds present");
        assert_eq!(btf.offset_of("outer", "first").unwrap(), 0);
        assert_eq!(btf.offset_of("outer", "a").unwrap(), 4);
        assert_eq!(btf.offset_of("outer", "b").unwrap(), 4);
        assert_eq!(btf.field("outer", "c").unwrap(), (8, 4));
        assert_eq!(btf.field("outer", "arr").unwrap(), (12, 64));
        assert_eq!(btf.offset_of("outer", "in.y").unwrap(), 80);
        assert_eq!(btf.offset_of("outer", "en").unwrap(), 84);
        assert_eq!(btf.offset_of("outer", "tt").unwrap(), 89);
        let obf = btf.member("outer", "obf").unwrap();
        assert_eq!((obf.bit_offset, obf.bitfield_size), (706, 3));
        let kf = btf.member("kf", "a").unwrap();
        assert_eq!((kf.bit_offset, kf.bitfield_size), (3, 5));
        assert!(matches!(
            btf.offset_of("kf", "a"),
            Err(Error::Bitfield { .. })
        ));
        assert_eq!(btf.offset_of("kf", "full").unwrap(), 4);
    }

    #[test]
    fn synthetic_truncated_and_bad_magic() {
        let mut blob = synthetic();
        // cut the last member record of the last struct: its vlen now overruns the section
        let type_len = u32::from_le_bytes(blob[12..16].try_into().unwrap()) - 4;
        blob[12..16].copy_from_slice(&type_len.to_le_bytes());
        assert!(matches!(Btf::parse(&blob), Err(Error::Malformed(_))));
        let mut blob = synthetic();
        blob[0] = 0;
        assert!(matches!(Btf::parse(&blob), Err(Error::BadMagic(_))));
        let mut blob = synthetic();
        blob[24 + 7] = 20; // first type's kind byte := 20 (unknown)
        assert!(matches!(
            Btf::parse(&blob),
            Err(Error::UnknownKind { id: 1, kind: 20 })
        ));
    }
}
