//! GitHub webhook deliveries in SQLite: kept once by id, pending until processed.

use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use super::rows::to_i64;
use crate::error::StoreError;
use crate::model::{DeliveryAccepted, NewDelivery, StoredDelivery};

const COLUMNS: &str = "id, event, payload, received_ms, outcome";

fn delivery_from(row: &SqliteRow) -> Result<StoredDelivery, StoreError> {
    Ok(StoredDelivery {
        id: row.try_get("id").map_err(StoreError::db("reading a delivery"))?,
        event: row.try_get("event").map_err(StoreError::db("reading a delivery"))?,
        payload: row.try_get("payload").map_err(StoreError::db("reading a delivery"))?,
        received_ms: row.try_get("received_ms").map_err(StoreError::db("reading a delivery"))?,
        outcome: row.try_get("outcome").map_err(StoreError::db("reading a delivery"))?,
    })
}

impl SqliteStore {
    pub(super) async fn insert_delivery(
        &self,
        delivery: &NewDelivery,
        max_pending: u64,
    ) -> Result<DeliveryAccepted, StoreError> {
        // One statement on the one writer: the pending count and the id's absence are
        // read under the write lock, so concurrent deliveries cannot overfill the queue
        // or both be kept.
        let inserted = sqlx::query(
            "INSERT INTO github_deliveries (id, event, payload, received_ms, state) \
             SELECT ?1, ?2, ?3, ?4, 'pending' \
             WHERE NOT EXISTS (SELECT 1 FROM github_deliveries WHERE id = ?1) \
               AND (SELECT count(*) FROM github_deliveries WHERE state = 'pending') < ?5",
        )
        .bind(&delivery.id)
        .bind(&delivery.event)
        .bind(&delivery.payload)
        .bind(delivery.received_ms)
        .bind(to_i64(max_pending))
        .execute(&self.writer)
        .await
        .map_err(StoreError::db("keeping a delivery"))?;
        if inserted.rows_affected() == 1 {
            return Ok(DeliveryAccepted::Queued);
        }
        // Read on the writer: the row that made the insert a no-op is there.
        let kept: Option<i64> = sqlx::query_scalar("SELECT 1 FROM github_deliveries WHERE id = ?1")
            .bind(&delivery.id)
            .fetch_optional(&self.writer)
            .await
            .map_err(StoreError::db("reading a delivery"))?;
        Ok(if kept.is_some() {
            DeliveryAccepted::Duplicate
        } else {
            DeliveryAccepted::QueueFull { limit: max_pending }
        })
    }

    pub(super) async fn select_pending_deliveries(&self, limit: u32) -> Result<Vec<StoredDelivery>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM github_deliveries WHERE state = 'pending' ORDER BY received_ms, id LIMIT ?1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("listing pending deliveries"))?;
        rows.iter().map(delivery_from).collect()
    }

    pub(super) async fn select_delivery(&self, id: &str) -> Result<Option<StoredDelivery>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM github_deliveries WHERE id = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading a delivery"))?;
        row.as_ref().map(delivery_from).transpose()
    }

    pub(super) async fn mark_delivery_done(&self, id: &str, outcome: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE github_deliveries SET state = 'done', outcome = ?2, finished_ms = ?3 \
             WHERE id = ?1 AND state = 'pending'",
        )
        .bind(id)
        .bind(outcome)
        .bind(now_ms)
        .execute(&self.writer)
        .await
        .map_err(StoreError::db("finishing a delivery"))?;
        Ok(())
    }
}
