//! Where in the file a key is written, for problems that serde reports by path only (an
//! unknown key). The file is parsed for spans once, and only when such a problem needs a line.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a key's path.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// The path serde_ignored reports, as steps.
pub(super) fn segments(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path as P;
    match path {
        P::Root => Vec::new(),
        P::Seq { parent, index } => {
            let mut v = segments(parent);
            v.push(Seg::Index(*index));
            v
        }
        P::Map { parent, key } => {
            let mut v = segments(parent);
            // `Spanned` wraps values in a private map of its own; it is not part of the path.
            if !key.starts_with("$__serde_spanned") {
                v.push(Seg::Key(key.clone()));
            }
            v
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            segments(parent)
        }
    }
}

/// `apps[0].key`, as the problem names it.
pub(super) fn display_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The file's span-keeping parse, made once for every key looked up in it.
pub(super) struct Spans<'a> {
    root: Option<Spanned<DeTable<'a>>>,
}

impl<'a> Spans<'a> {
    pub(super) fn parse(text: &'a str) -> Spans<'a> {
        Spans {
            root: DeTable::parse(text).ok(),
        }
    }

    /// Where the key at `path` is written.
    pub(super) fn locate(&self, path: &[Seg]) -> Option<Range<usize>> {
        let mut table = self.root.as_ref()?.get_ref();
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        let mut key_span = None;
        for seg in path {
            match seg {
                Seg::Key(k) => {
                    let t = match value {
                        None => table,
                        Some(v) => match v.get_ref() {
                            DeValue::Table(t) => t,
                            _ => return key_span,
                        },
                    };
                    let (key, v) = t.get_key_value(k.as_str())?;
                    key_span = Some(key.span());
                    table = t;
                    value = Some(v);
                }
                Seg::Index(i) => {
                    let arr = match value?.get_ref() {
                        DeValue::Array(a) => a,
                        _ => return key_span,
                    };
                    value = arr.get(*i);
                    key_span = value.map(Spanned::span);
                }
            }
        }
        key_span
    }
}
