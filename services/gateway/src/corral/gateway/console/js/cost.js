// A session's estimated list cost: the list_cost its budget tracking recorded when it has one,
// else its token usage priced with the list price table the gateway serves in /console/config.json
// (the same table the harness measures budgets with). An estimate: operators may price differently.

import { modelOf } from "./format.js";

/** The price entry of `model`: the longest prefix of the table that it starts with. */
export function priceOf(model, prices) {
  if (!model || !prices) return null;
  const prefix = Object.keys(prices)
    .filter((p) => model.startsWith(p))
    .sort((a, b) => b.length - a.length)[0];
  return prefix ? prices[prefix] : null;
}

/** USD, or null when the model has no list price. */
export function estimatedCost(session, prices) {
  const usage = session?.usage ?? {};
  if (usage.list_cost?.amount != null) return Number(usage.list_cost.amount) / 100;
  const price = priceOf(modelOf(session?.agent), prices);
  if (!price) return null;
  const cacheWrites =
    (usage.cache_creation?.ephemeral_5m_input_tokens ?? 0) + (usage.cache_creation?.ephemeral_1h_input_tokens ?? 0);
  const perMillion =
    (usage.input_tokens ?? 0) * Number(price.input) +
    (usage.output_tokens ?? 0) * Number(price.output) +
    (usage.cache_read_input_tokens ?? 0) * Number(price.cache_read) +
    cacheWrites * Number(price.cache_write);
  return perMillion / 1e6;
}
