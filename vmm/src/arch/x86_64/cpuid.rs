//! CPUID for each vCPU: what KVM supports, with a coherent topology (one
//! socket, one thread per core, `cpus` cores) and each vCPU's own APIC ID,
//! so the guest counts its CPUs right.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};

use super::error::ArchError;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_SIZES: u32 = 0x8000_0008;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const TOPOLOGY_LEVEL_SMT: u32 = 1;
const TOPOLOGY_LEVEL_CORE: u32 = 2;

/// The CPUID KVM can offer on this host.
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, ArchError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(ArchError::GetSupportedCpuid)
}

/// Bits needed to number `n` items (`ceil(log2(n))`).
fn id_bits(n: u32) -> u32 {
    n.max(1).next_power_of_two().trailing_zeros()
}

/// Patches `entry` for vCPU `cpu_id` of `cpus`.
fn patch_entry(entry: &mut kvm_cpuid_entry2, cpu_id: u8, cpus: u8) {
    let (id, n) = (u32::from(cpu_id), u32::from(cpus.max(1)));
    match entry.function {
        LEAF_FEATURES => {
            // EBX: APIC ID in 31:24, logical processor count in 23:16.
            entry.ebx = (entry.ebx & 0x0000_ffff) | (id << 24) | (n << 16);
            entry.ecx |= ECX_HYPERVISOR;
            if n > 1 {
                entry.edx |= EDX_HTT;
            } else {
                entry.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE_PARAMS => {
            // EAX 31:26: cores per package - 1; 25:14: threads sharing this
            // cache - 1 (L1/L2 per core, L3 shared by all).
            let level = (entry.eax >> 5) & 0x7;
            let sharing = if level >= 3 { n - 1 } else { 0 };
            entry.eax = (entry.eax & 0x3fff) | ((n - 1) << 26) | (sharing << 14);
        }
        LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => {
            entry.edx = id; // x2APIC ID
            match entry.index {
                0 => {
                    entry.eax = 0;
                    entry.ebx = 1;
                    entry.ecx = (TOPOLOGY_LEVEL_SMT << 8) | entry.index;
                }
                1 => {
                    entry.eax = id_bits(n);
                    entry.ebx = n;
                    entry.ecx = (TOPOLOGY_LEVEL_CORE << 8) | entry.index;
                }
                _ => {
                    entry.eax = 0;
                    entry.ebx = 0;
                    entry.ecx = entry.index;
                }
            }
        }
        LEAF_AMD_SIZES => {
            // ECX 7:0: cores in the package - 1; 15:12: APIC ID bits.
            entry.ecx = (entry.ecx & !0xf0ff) | (id_bits(n) << 12) | (n - 1);
        }
        _ => {}
    }
}

/// `base` patched for vCPU `cpu_id` of `cpus`.
pub fn vcpu_cpuid(base: &CpuId, cpu_id: u8, cpus: u8) -> CpuId {
    let mut cpuid = base.clone();
    for entry in cpuid.as_mut_slice() {
        patch_entry(entry, cpu_id, cpus);
    }
    cpuid
}

/// Loads `base`, patched for vCPU `cpu_id` of `cpus`, into `vcpu`.
pub fn setup_cpuid(vcpu: &VcpuFd, base: &CpuId, cpu_id: u8, cpus: u8) -> Result<(), ArchError> {
    vcpu.set_cpuid2(&vcpu_cpuid(base, cpu_id, cpus))
        .map_err(ArchError::SetCpuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, eax: u32, ebx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ..Default::default()
        }
    }

    fn find(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    fn base() -> CpuId {
        CpuId::from_entries(&[
            entry(LEAF_FEATURES, 0, 0x806f8, 0x0008_0800),
            entry(LEAF_CACHE_PARAMS, 0, 0x121, 0), // L1d
            entry(LEAF_CACHE_PARAMS, 3, 0x163, 0), // L3
            entry(LEAF_TOPOLOGY, 0, 0, 0),
            entry(LEAF_TOPOLOGY, 1, 0, 0),
            entry(LEAF_TOPOLOGY, 2, 0, 0),
            entry(LEAF_AMD_SIZES, 0, 0x3030, 0),
        ])
        .unwrap()
    }

    #[test]
    fn each_vcpu_gets_its_apic_id_and_the_cpu_count() {
        let cpuid = vcpu_cpuid(&base(), 2, 4);
        let leaf1 = find(&cpuid, LEAF_FEATURES, 0);
        assert_eq!(leaf1.ebx >> 24, 2);
        assert_eq!((leaf1.ebx >> 16) & 0xff, 4);
        assert_eq!(leaf1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(leaf1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(leaf1.edx & EDX_HTT, 0);
        let core = find(&cpuid, LEAF_TOPOLOGY, 1);
        assert_eq!((core.eax, core.ebx, core.ecx >> 8, core.edx), (2, 4, 2, 2));
        let smt = find(&cpuid, LEAF_TOPOLOGY, 0);
        assert_eq!((smt.ebx, smt.ecx >> 8), (1, 1));
        assert_eq!(find(&cpuid, LEAF_TOPOLOGY, 2).ecx >> 8, 0);
        assert_eq!(find(&cpuid, LEAF_CACHE_PARAMS, 0).eax >> 26, 3);
        assert_eq!((find(&cpuid, LEAF_CACHE_PARAMS, 3).eax >> 14) & 0xfff, 3);
        assert_eq!((find(&cpuid, LEAF_CACHE_PARAMS, 0).eax >> 14) & 0xfff, 0);
        assert_eq!(find(&cpuid, LEAF_AMD_SIZES, 0).ecx & 0xff, 3);
    }

    #[test]
    fn a_single_vcpu_has_no_htt() {
        let cpuid = vcpu_cpuid(&base(), 0, 1);
        let leaf1 = find(&cpuid, LEAF_FEATURES, 0);
        assert_eq!(leaf1.edx & EDX_HTT, 0);
        assert_eq!((leaf1.ebx >> 16) & 0xff, 1);
        assert_eq!(find(&cpuid, LEAF_TOPOLOGY, 1).eax, 0);
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!([1, 2, 3, 4, 5, 8, 9].map(id_bits), [0, 1, 2, 2, 3, 3, 4]);
    }
}
