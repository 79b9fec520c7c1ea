// A batch consumer for tests/test_event_sources.py: POSTs what it got to $RECEIVER, fails the records whose text
// starts with "fail" (batchItemFailures) and the whole batch when one starts with "crash"; a batch with a "slow" record
// takes 30 ms more (a backlog for the poller to scale to).
const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

function fromBase64(text) {
  let bits = 0, value = 0, out = "";
  for (const c of text) {
    if (c === "=") break;
    value = (value << 6) | B64.indexOf(c);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += String.fromCharCode((value >> bits) & 0xff);
    }
  }
  return out;
}

export default {
  async fetch(request, env) {
    const batch = await request.json();
    const records = batch.Records.map((r) =>
      r.kinesis
        ? { id: r.kinesis.sequenceNumber, text: fromBase64(r.kinesis.data), shard: r.eventID.split(":")[0] }
        : { id: r.messageId, text: r.body, receives: Number(r.attributes.ApproximateReceiveCount) },
    );
    await fetch(env.RECEIVER, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ records }) });
    if (records.some((r) => r.text.startsWith("crash"))) throw new Error("a record says crash");
    if (records.some((r) => r.text.startsWith("slow"))) {
      const until = Date.now() + 30;
      while (Date.now() < until);
    }
    return Response.json({ batchItemFailures: records.filter((r) => r.text.startsWith("fail")).map((r) => ({ itemIdentifier: r.id })) });
  },
};
