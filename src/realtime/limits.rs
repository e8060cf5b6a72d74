//! How many Socket.IO connections one user (`REALTIME_MAX_SOCKETS_PER_USER`) and one
//! client address (`REALTIME_MAX_SOCKETS_PER_IP`) hold on this instance.
//!
//! Per instance, not shared through Redis: a cap bounds what one account or one address
//! can make one instance hold (memory, file descriptors, presence entries to refresh),
//! which is a local cost; spread over N instances it holds at most N × the cap in all.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

/// The open connections per key (a user, a client address) of this instance.
#[derive(Debug)]
pub(crate) struct Caps<K: Eq + Hash + Clone> {
    max: usize,
    open: Mutex<HashMap<K, usize>>,
}

/// Connections per user.
pub(crate) type SocketsPerUser = Caps<Uuid>;
/// Connections per client address (its rate-limit bucket: an IPv6 /64).
pub(crate) type SocketsPerIp = Caps<String>;

/// One connection's place under a cap; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot<K: Eq + Hash + Clone> {
    owner: Arc<Caps<K>>,
    user: K,
}

impl<K: Eq + Hash + Clone> Caps<K> {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::default(),
        })
    }

    /// A place for one more connection of `user`, or `None` at the cap.
    pub(crate) fn take(self: &Arc<Self>, user: K) -> Option<Slot<K>> {
        let mut open = self.lock();
        let n = open.entry(user.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            owner: self.clone(),
            user,
        })
    }

    /// Connections `user` holds here now.
    #[cfg(test)]
    fn held(&self, user: K) -> usize {
        self.lock().get(&user).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut open = self.owner.lock();
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_holds_per_user_and_a_closed_connection_frees_its_place() {
        let limits = SocketsPerUser::new(2);
        let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let first = limits.take(ada).expect("first");
        let _second = limits.take(ada).expect("second");
        assert!(limits.take(ada).is_none(), "a third is over the cap");
        assert!(
            limits.take(bob).is_some(),
            "another user has a cap of their own"
        );
        drop(first);
        assert_eq!(limits.held(ada), 1);
        assert!(
            limits.take(ada).is_some(),
            "a freed place can be taken again"
        );
    }
}
