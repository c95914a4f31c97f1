// Validate an AsyncAPI document with the AsyncAPI parser, then check messages captured
// from a real run against the schemas it gives them.
//
//   node check-asyncapi.mjs DOCUMENT.json [MESSAGES.json]
//
// MESSAGES.json is a list of {"type": ..., "headers": {...}, "body": {...}}. Prints one
// JSON object: {"errors": [...], "checked": N, "unknown": [...], "invalid": [...]}, and
// exits 1 when anything is wrong.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";
import Ajv from "ajv";

const [documentPath, messagesPath] = process.argv.slice(2);
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(documentPath, "utf8"));
const errors = diagnostics
  .filter((d) => d.severity === 0)
  .map((d) => `${d.path.join(".")}: ${d.message}`);
const report = { errors, warnings: diagnostics.filter((d) => d.severity === 1).length };

if (document && messagesPath) {
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  const schemas = new Map();
  for (const message of document.allMessages()) {
    const name = message.name();
    const payload = message.payload()?.json();
    const headers = message.headers()?.json();
    schemas.set(name, {
      payload: payload && ajv.compile(payload),
      headers: headers && ajv.compile(headers),
    });
  }
  const captured = JSON.parse(readFileSync(messagesPath, "utf8"));
  report.checked = 0;
  report.unknown = [];
  report.invalid = [];
  for (const { type, headers, body } of captured) {
    const schema = schemas.get(type);
    if (!schema) {
      report.unknown.push(type);
      continue;
    }
    report.checked += 1;
    for (const [part, value] of [["payload", body], ["headers", headers]]) {
      if (schema[part] && !schema[part](value)) {
        report.invalid.push({ type, part, errors: ajv.errorsText(schema[part].errors) });
      }
    }
  }
}
console.log(JSON.stringify(report));
const bad = !document || errors.length || report.unknown?.length || report.invalid?.length;
process.exit(bad ? 1 : 0);
