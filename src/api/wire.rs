//! Request shapes of the 2017-03-14 API. Every member is optional here so
//! that a missing required member becomes `InvalidInput` naming it (checked
//! by the handlers), while a member of the wrong JSON type is a
//! `SerializationException`, as AWS answers.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `{Key, Value}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: Option<String>,
    pub value: Option<String>,
}

/// `Properties.DnsProperties.SOA.TTL` of namespace requests.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct NamespaceProperties {
    pub dns_properties: Option<DnsProperties>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct DnsProperties {
    #[serde(rename = "SOA")]
    pub soa: Option<Soa>,
}

#[derive(Debug, Deserialize, Default)]
pub struct Soa {
    #[serde(rename = "TTL")]
    pub ttl: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateNamespace {
    pub name: Option<String>,
    pub creator_request_id: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<Tag>>,
    pub vpc: Option<String>,
    pub properties: Option<NamespaceProperties>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NamespaceChange {
    pub description: Option<String>,
    pub properties: Option<NamespaceProperties>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateNamespace {
    pub id: Option<String>,
    pub updater_request_id: Option<String>,
    pub namespace: Option<NamespaceChange>,
}

/// Requests that carry only `Id`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ById {
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Filter {
    pub name: Option<String>,
    pub values: Option<Vec<String>>,
    pub condition: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct List {
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
    pub filters: Option<Vec<Filter>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsRecord {
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    #[serde(rename = "TTL")]
    pub ttl: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsConfig {
    pub namespace_id: Option<String>,
    pub routing_policy: Option<String>,
    pub dns_records: Option<Vec<DnsRecord>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheckConfig {
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    pub resource_path: Option<String>,
    pub failure_threshold: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheckCustomConfig {
    pub failure_threshold: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateService {
    pub name: Option<String>,
    pub namespace_id: Option<String>,
    pub creator_request_id: Option<String>,
    pub description: Option<String>,
    pub dns_config: Option<DnsConfig>,
    pub health_check_config: Option<HealthCheckConfig>,
    pub health_check_custom_config: Option<HealthCheckCustomConfig>,
    pub tags: Option<Vec<Tag>>,
    #[serde(rename = "Type")]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsConfigChange {
    pub dns_records: Option<Vec<DnsRecord>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceChange {
    pub description: Option<String>,
    pub dns_config: Option<DnsConfigChange>,
    pub health_check_config: Option<HealthCheckConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateService {
    pub id: Option<String>,
    pub service: Option<ServiceChange>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceAttributes {
    pub service_id: Option<String>,
    pub attributes: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteServiceAttributes {
    pub service_id: Option<String>,
    pub attributes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterInstance {
    pub service_id: Option<String>,
    pub instance_id: Option<String>,
    pub creator_request_id: Option<String>,
    pub attributes: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceRef {
    pub service_id: Option<String>,
    pub instance_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListInstances {
    pub service_id: Option<String>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetInstancesHealthStatus {
    pub service_id: Option<String>,
    pub instances: Option<Vec<String>>,
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateCustomHealth {
    pub service_id: Option<String>,
    pub instance_id: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DiscoverInstances {
    pub namespace_name: Option<String>,
    pub service_name: Option<String>,
    pub max_results: Option<i64>,
    pub query_parameters: Option<BTreeMap<String, String>>,
    pub optional_parameters: Option<BTreeMap<String, String>>,
    pub health_status: Option<String>,
    pub owner_account: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetOperation {
    pub operation_id: Option<String>,
    pub owner_account: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TagResource {
    #[serde(rename = "ResourceARN")]
    pub resource_arn: Option<String>,
    #[serde(rename = "Tags")]
    pub tags: Option<Vec<Tag>>,
    #[serde(rename = "TagKeys")]
    pub tag_keys: Option<Vec<String>>,
}
