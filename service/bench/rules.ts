// The benchmarks' policy rules: three rules (one nested), all passed by the evaluate bodies they send.
export const RULES = [
  { rule_id: "retention", name: "Retention", severity: "High", expression: { op: "greater_than_or_equal", field: "data.retention_days", value: 2555 } },
  { rule_id: "region", name: "Region", severity: "Medium", expression: { op: "in", field: "data.region", values: ["eu-west-1", "eu-central-1"] } },
  { rule_id: "encrypted", name: "Encrypted", severity: "Critical", expression: { op: "and", args: [
    { op: "equal", field: "data.encryption.enabled", value: true },
    { op: "starts_with", field: "data.encryption.algorithm", value: "AES" },
  ] } },
];
