//! User names for UIDs, cached (NSS look-ups can be slow; a UID's name rarely changes).

use std::{collections::HashMap, sync::Mutex};

#[derive(Default)]
pub struct UserNames {
    cache: Mutex<HashMap<u32, Option<String>>>,
}

impl UserNames {
    /// The user name of `uid`, or None when it has none.
    pub fn name(&self, uid: u32) -> Option<String> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    /// The user name, or the number as text.
    pub fn label(&self, uid: u32) -> String {
        self.name(uid).unwrap_or_else(|| uid.to_string())
    }
}

/// The user name of `uid` (uncached), or the number as text.
pub fn name_or_number(uid: u32) -> String {
    nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}
