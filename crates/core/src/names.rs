//! Name interning. Channel names cross the boundary once; afterwards both sides speak in
//! `u32` ids, because a string across N-API costs 50-110 ns and an integer about 8 ns.

use std::collections::HashMap;

use crate::error::BusError;

/// The interned id of a channel name. Ids are dense, starting at 0, in order of first use.
pub type ChannelId = u32;

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a channel or agent name: 1 to 255 bytes of ASCII letters, digits and `. _ - : / * >`.
pub fn validate(name: &str) -> Result<(), BusError> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_LEN {
        "is longer than 255 bytes"
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:/*>".contains(&b)) {
        "may hold only ASCII letters, digits and . _ - : / * >"
    } else {
        return Ok(());
    };
    Err(BusError::InvalidName { name: name.to_owned(), reason })
}

/// Maps names to dense ids and back.
#[derive(Debug, Default)]
pub struct Interner {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    /// The id of `name`, assigning the next id on first use. Fails on an invalid name.
    pub fn intern(&mut self, name: &str) -> Result<u32, BusError> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        validate(name)?;
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        Ok(id)
    }

    /// The id of a name the core derives from a valid one (such as `<channel>.dead-letter`),
    /// which may run past the length limit of names users give.
    pub fn intern_derived(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    /// The id of `name` if it was interned.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// The name behind `id`.
    #[must_use]
    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(AsRef::as_ref)
    }

    /// How many names are interned.
    #[must_use]
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name is interned yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_stable() {
        let mut names = Interner::default();
        assert_eq!(names.intern("a").unwrap(), 0);
        assert_eq!(names.intern("b.c").unwrap(), 1);
        assert_eq!(names.intern("a").unwrap(), 0);
        assert_eq!(names.name(1), Some("b.c"));
        assert_eq!(names.get("zz"), None);
    }

    #[test]
    fn invalid_names_are_refused_and_not_interned() {
        let mut names = Interner::default();
        for bad in ["", "has space", "é", &"x".repeat(256)] {
            let err = names.intern(bad).unwrap_err();
            assert!(matches!(err, BusError::InvalidName { .. }), "{bad:?}");
        }
        assert!(names.is_empty());
    }
}
