//! Running statements through a transaction-pooling proxy (PgBouncer with
//! `pool_mode = transaction`, `DATABASE_POOLER=transaction`).
//!
//! Behind such a proxy a server connection is ours only from `BEGIN` to `COMMIT`; at
//! any other `ReadyForQuery` the proxy may hand the next message to another server.
//! sqlx's extended-protocol round trips do not survive that:
//! - it names statements `sqlx_s_1`, `sqlx_s_2`, … per client connection and caches
//!   them: on another server they do not exist, or another client's statement of the
//!   same name does (`prepared statement "sqlx_s_1" already exists`);
//! - even an unnamed statement is parsed in one round trip (Parse, Describe, Sync)
//!   and bound in the next (Bind, Execute, Sync), with a `ReadyForQuery` between, so
//!   outside a transaction the two halves can reach different servers.
//!
//! So behind a pooler every statement is unnamed ([`query`]) and runs inside an
//! explicit transaction: the caller's own ([`super::Db::begin`]) or one that
//! [`Pooled`] opens around a single statement. The price is two extra round trips
//! (BEGIN, COMMIT) and a parse per statement; direct connections keep sqlx's
//! statement cache.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::error::BoxDynError;
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Either, Execute, Executor, SqlSafeStr, SqlStr};

/// Whether this process talks to its database through a transaction pooler. It is one
/// switch for the process, not a field of each pool, because statements are built
/// (`sqlx::query`) far from any pool, inside repository functions that take any
/// executor; it only ever turns on (a statement that is unnamed when it need not be
/// is slower, never wrong).
static UNNAMED: AtomicBool = AtomicBool::new(false);

/// From now on, statements built with [`query`] are unnamed (set once, at start-up,
/// by [`super::Db::lazy`] when `DATABASE_POOLER=transaction`).
pub(super) fn use_unnamed_statements() {
    UNNAMED.store(true, Ordering::Relaxed);
}

/// Whether a statement may be prepared under a name and cached on its connection;
/// for the few statements not built with [`query`] (`query_scalar`).
pub fn named() -> bool {
    !UNNAMED.load(Ordering::Relaxed)
}

/// `sqlx::query`, whose statement is cached per connection on a direct database and
/// unnamed behind a transaction pooler. Every statement of the repository is built
/// here.
pub fn query<'q>(sql: impl SqlSafeStr) -> Query<'q, Any, AnyArguments> {
    sqlx::query(sql).persistent(named())
}

/// A statement that must not be prepared under a name, whatever it was built with.
struct Unnamed<E>(E);

impl<'q, E: Execute<'q, Any>> Execute<'q, Any> for Unnamed<E> {
    fn sql(self) -> SqlStr {
        self.0.sql()
    }

    fn statement(&self) -> Option<&AnyStatement> {
        // A prepared statement object carries a server-side name; behind a pooler
        // only its SQL can be sent again.
        None
    }

    fn take_arguments(&mut self) -> Result<Option<AnyArguments>, BoxDynError> {
        self.0.take_arguments()
    }

    fn persistent(&self) -> bool {
        false
    }
}

/// The pool as an executor (`db.pool()`, `db.writer()`): on a direct database the
/// pool itself; behind a transaction pooler each statement in its own transaction,
/// opened with `begin` (which also sets the statement timeout, see
/// [`super::Db::lazy`]).
#[derive(Debug, Clone, Copy)]
pub struct Pooled<'p> {
    pub(super) pool: &'p AnyPool,
    pub(super) begin: Option<&'p SqlStr>,
}

impl<'p> Executor<'p> for Pooled<'p> {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let Some(begin) = self.begin else {
            return self.pool.fetch_many(query);
        };
        let (pool, begin) = (self.pool, begin.clone());
        // Collected, not streamed: the transaction must end before the caller sees
        // the rows, and every statement of the repository reads a bounded page.
        futures::stream::once(async move {
            let mut tx = pool.begin_with(begin).await?;
            let items: Vec<_> = (&mut *tx).fetch_many(Unnamed(query)).try_collect().await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(futures::stream::iter(items.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Any>,
    {
        let Some(begin) = self.begin else {
            return self.pool.fetch_optional(query);
        };
        let (pool, begin) = (self.pool, begin.clone());
        Box::pin(async move {
            let mut tx = pool.begin_with(begin).await?;
            let row = (&mut *tx).fetch_optional(Unnamed(query)).await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.prepare_with(sql, parameters)
    }

    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<sqlx::Describe<Any>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.pool.describe(sql)
    }
}
