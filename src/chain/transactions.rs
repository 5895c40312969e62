//! Writing to the chain: each call signed, submitted, followed to its block, and its outcome
//! decoded, the chain's refusals by name; and model commitments. The weight calls, and the
//! rule that picks among them, are in [`super::weights`].

use std::time::Duration;

use subxt::PolkadotConfig;
use subxt::dynamic::{self, Value};
use subxt::error::DispatchError;
use subxt::extrinsics::ExtrinsicEvents;
use subxt::tx::Payload;
use subxt_signer::sr25519::Keypair;

use super::{Chain, ChainError, client_at};
use crate::machine::event::SubmitOutcome;
use crate::machine::model_id::MAX_METADATA_BYTES;

/// The journal's record of a submission's result.
pub fn submit_outcome(result: &Result<u64, ChainError>) -> SubmitOutcome {
    match result {
        Ok(block) => SubmitOutcome::Included { block: *block },
        Err(ChainError::Refused { name, detail }) => {
            SubmitOutcome::Refused(refusal_reason(name, detail))
        }
        Err(other) => SubmitOutcome::Failed(other.to_string()),
    }
}

/// A refusal as the journal records it: the runtime error's name, then its detail if any.
pub fn refusal_reason(name: &str, detail: &str) -> String {
    if detail.is_empty() {
        name.to_owned()
    } else {
        format!("{name}: {detail}")
    }
}

/// Subtensor's `InvalidTransaction::Custom` codes (current runtimes' numbering).
fn custom_validity_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0 => "ColdkeyInSwapSchedule",
        1 => "StakeAmountTooLow",
        2 => "BalanceTooLow",
        3 => "SubnetNotExists",
        4 => "HotkeyAccountDoesntExist",
        5 => "NotEnoughStakeToWithdraw",
        6 => "RateLimitExceeded",
        10 => "HotKeyNotRegisteredInNetwork",
        14 => "BadRequest",
        16 => "InvalidRevealRound",
        17 => "CommitNotFound",
        18 => "CommitBlockNotInRevealRange",
        19 => "InputLengthsUnequal",
        _ => return None,
    })
}

/// Sorts a submission error: the transaction pool's "invalid" answers and the runtime's
/// dispatch errors are refusals; transport trouble is unavailability.
fn classify(message: String) -> ChainError {
    let lower = message.to_lowercase();
    if lower.contains("invalid transaction")
        || lower.contains("transaction is not valid")
        || lower.contains("1010")
    {
        let code = message.split("Custom error: ").nth(1).and_then(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u8>()
                .ok()
        });
        let name = match code {
            Some(code) => custom_validity_name(code).map_or_else(
                || format!("InvalidTransaction::Custom({code})"),
                str::to_owned,
            ),
            None => "InvalidTransaction".into(),
        };
        return ChainError::Refused {
            name,
            detail: message,
        };
    }
    if lower.contains("priority is too low")
        || lower.contains("temporarily banned")
        || lower.contains("outdated")
    {
        return ChainError::Refused {
            name: "TransactionPool".into(),
            detail: message,
        };
    }
    ChainError::Unavailable(message)
}

fn dispatch_refusal(error: &DispatchError) -> ChainError {
    match error {
        DispatchError::Module(module) => match module.details() {
            Ok(details) => ChainError::Refused {
                name: details.variant.name.clone(),
                detail: format!(
                    "{}: {}",
                    details.pallet.name(),
                    details.variant.docs.join(" ").trim()
                ),
            },
            Err(_) => ChainError::Refused {
                name: "ModuleError".into(),
                detail: module.to_string(),
            },
        },
        other => ChainError::Refused {
            name: format!("{other:?}"),
            detail: other.to_string(),
        },
    }
}

/// How often blocks are searched for a submitted extrinsic while its in-block notification
/// has not come (notifications were seen to go missing under load).
const SCAN_EVERY: Duration = Duration::from_secs(2);

/// A submitted extrinsic found in a block: the block's number and the extrinsic's events.
type Found = (u64, ExtrinsicEvents<PolkadotConfig>);

impl Chain {
    /// Signs and submits `payload`, waits for it to be in a block, and returns that block's
    /// number, or the chain's refusal. The wait never rests on the in-block notification
    /// alone: the blocks since submission are searched for the extrinsic as well.
    pub async fn submit<P: Payload + Send + Sync>(
        &self,
        what: &str,
        payload: P,
        signer: &Keypair,
    ) -> Result<u64, ChainError> {
        self.call(what, |client| async move {
            let at = client_at(&client, None).await?;
            // The extrinsic cannot be in the head it was signed at: it is searched for after.
            let mut next_scanned = at.block_number().saturating_add(1);
            let mut progress = at
                .transactions()
                .sign_and_submit_then_watch_default(&payload, signer)
                .await
                .map_err(|e| classify(e.to_string()))?;
            let ext_hash = progress.extrinsic_hash();
            let (block, events) = loop {
                use subxt::tx::TransactionStatus;
                let status = tokio::select! {
                    status = progress.next() => status,
                    () = tokio::time::sleep(SCAN_EVERY) => {
                        if let Some(found) =
                            find_extrinsic(&client, ext_hash, &mut next_scanned).await?
                        {
                            break found;
                        }
                        continue;
                    }
                };
                match status {
                    Some(Ok(
                        TransactionStatus::InBestBlock(in_block)
                        | TransactionStatus::InFinalizedBlock(in_block),
                    )) => {
                        let events = match in_block.wait_for_success().await {
                            Ok(events) => events,
                            Err(subxt::error::TransactionEventsError::ExtrinsicFailed(error)) => {
                                return Err(dispatch_refusal(&error));
                            }
                            Err(error) => return Err(ChainError::Unavailable(error.to_string())),
                        };
                        let block = client
                            .at_block(in_block.block_hash())
                            .await
                            .map_err(|e| ChainError::Unavailable(e.to_string()))?
                            .block_number();
                        break (block, events);
                    }
                    Some(Ok(
                        TransactionStatus::Invalid { message }
                        | TransactionStatus::Dropped { message },
                    )) => {
                        return Err(classify(format!("invalid transaction: {message}")));
                    }
                    Some(Ok(TransactionStatus::Error { message })) => {
                        return Err(ChainError::Unavailable(message));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(classify(error.to_string())),
                    // The stream ended without a word: the blocks may still hold it.
                    None => {
                        break loop {
                            if let Some(found) =
                                find_extrinsic(&client, ext_hash, &mut next_scanned).await?
                            {
                                break found;
                            }
                            tokio::time::sleep(SCAN_EVERY).await;
                        };
                    }
                }
            };
            // `Sudo.sudo` succeeds as an extrinsic even when the call inside fails: its
            // `Sudid { sudo_result }` event carries the inner result.
            for event in events.iter() {
                let event = event.map_err(|e| ChainError::Decode(e.to_string()))?;
                if event.pallet_name() == "Sudo"
                    && event.event_name() == "Sudid"
                    && let [1, error @ ..] = event.field_bytes()
                {
                    let error = DispatchError::decode_from(error.to_vec(), at.metadata())
                        .map_err(|e| ChainError::Decode(format!("Sudid's error: {e}")))?;
                    return Err(dispatch_refusal(&error));
                }
            }
            Ok(block)
        })
        .await
    }
}

/// Searches the blocks from `next` to the head for the extrinsic `ext_hash`; `next` moves past
/// every block searched. A block that holds it answers with its events, or with the
/// dispatch error it failed with.
async fn find_extrinsic(
    client: &super::Client,
    ext_hash: subxt::utils::H256,
    next: &mut u64,
) -> Result<Option<Found>, ChainError> {
    let unavailable = |e: &dyn std::fmt::Display| ChainError::Unavailable(e.to_string());
    let head = client
        .at_current_block()
        .await
        .map_err(|e| unavailable(&e))?
        .block_number();
    while *next <= head {
        let at = client.at_block(*next).await.map_err(|e| unavailable(&e))?;
        let extrinsics = at.extrinsics().fetch().await.map_err(|e| unavailable(&e))?;
        for extrinsic in extrinsics.iter() {
            let Ok(extrinsic) = extrinsic else { continue };
            if extrinsic.hash() != ext_hash {
                continue;
            }
            let events = extrinsic.events().await.map_err(|e| unavailable(&e))?;
            for event in events.iter() {
                let event = event.map_err(|e| ChainError::Decode(e.to_string()))?;
                if event.pallet_name() == "System" && event.event_name() == "ExtrinsicFailed" {
                    let error = DispatchError::decode_from(event.field_bytes(), at.metadata())
                        .map_err(|e| ChainError::Decode(format!("ExtrinsicFailed: {e}")))?;
                    return Err(dispatch_refusal(&error));
                }
            }
            return Ok(Some((*next, events)));
        }
        *next += 1;
    }
    Ok(None)
}

impl Chain {
    /// `Commitments.set_commitment` of one `Raw` field: a miner's model id. Refused before
    /// sending when over 128 bytes.
    pub async fn set_commitment(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        bytes: &[u8],
    ) -> Result<u64, ChainError> {
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(ChainError::Invalid(format!(
                "the commitment is {} bytes; the limit is {MAX_METADATA_BYTES}",
                bytes.len()
            )));
        }
        self.set_commitment_field(hotkey, netuid, raw_field(bytes))
            .await
    }

    /// `Commitments.set_commitment` with any one `Data` field (tests write malformed ones).
    pub async fn set_commitment_field(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        field: Value,
    ) -> Result<u64, ChainError> {
        self.submit("set_commitment", commitment_payload(netuid, field), hotkey)
            .await
    }
}

/// `Commitments.set_commitment(netuid, {fields: [field]})`.
pub fn commitment_payload(netuid: u16, field: Value) -> subxt::tx::DynamicPayload<(u16, Value)> {
    let info = Value::named_composite([("fields", Value::unnamed_composite([field]))]);
    dynamic::tx("Commitments", "set_commitment", (netuid, info))
}

/// A `Data::Raw{len}` commitment field.
pub fn raw_field(bytes: &[u8]) -> Value {
    Value::unnamed_variant(format!("Raw{}", bytes.len()), [Value::from_bytes(bytes)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_named() {
        let error = classify("Invalid Transaction: Custom error: 6".into());
        assert!(
            matches!(error, ChainError::Refused { ref name, .. } if name == "RateLimitExceeded"),
            "{error}"
        );
        let error = classify("rpc error: 1010: Invalid Transaction: Custom error: 99".into());
        assert!(
            matches!(error, ChainError::Refused { ref name, .. } if name == "InvalidTransaction::Custom(99)")
        );
        assert!(matches!(
            classify("connection reset".into()),
            ChainError::Unavailable(_)
        ));
        assert_eq!(
            submit_outcome(&Err(ChainError::Refused {
                name: "SettingWeightsTooFast".into(),
                detail: String::new()
            })),
            SubmitOutcome::Refused("SettingWeightsTooFast".into())
        );
        assert_eq!(submit_outcome(&Ok(7)), SubmitOutcome::Included { block: 7 });
    }
}
