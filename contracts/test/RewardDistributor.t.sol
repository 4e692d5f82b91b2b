// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {JobMarket} from "../src/JobMarket.sol";
import {RewardDistributor, IRewardSource} from "../src/RewardDistributor.sol";
import {Owned} from "../src/base/Owned.sol";
import {TokenTransfer} from "../src/libraries/TokenTransfer.sol";
import {MarketFixture} from "./utils/MarketFixture.sol";
import {DistributorTrees} from "./utils/DistributorTrees.sol";
import {MockERC20} from "./utils/MockERC20.sol";
import {Test} from "./utils/Test.sol";
import {Vm} from "./utils/Vm.sol";

contract RewardDistributorTest is MarketFixture, DistributorTrees {
    uint64 internal constant ROOT_WINDOW = 1 days;
    RewardDistributor internal distributor;
    address internal anyone = address(0xA11CE);

    function setUp() public {
        setUpMarket();
        distributor =
            new RewardDistributor(IRewardSource(address(market)), address(this), aggregator, challenger, ROOT_WINDOW);
        market.setRewardsAccount(address(distributor));
    }

    /// Settle round `round` of `jobId` with workers [from, from+count) accepted at `reward` each.
    function playRound(uint64 jobId, uint32 round, uint256 from, uint256 count, uint256 reward) internal {
        if (round == 0) {
            prepareRound(jobId, round, EVM_WORKERS, from, count);
        } else {
            assign(jobId, EVM_WORKERS, from, count);
            for (uint256 i = from; i < from + count; ++i) {
                commit(jobId, round, EVM_WORKERS, workerKey(i));
            }
        }
        finalize(jobId, round, acceptedResults(EVM_WORKERS, from, count, reward));
        vm.warp(block.timestamp + WINDOW);
        settle(jobId, round);
    }

    function payouts(uint256 count) internal pure returns (address[] memory accounts) {
        accounts = new address[](count);
        for (uint256 i = 0; i < count; ++i) {
            accounts[i] = payoutOf(i);
        }
    }

    function amounts(uint256 count, uint256 each) internal pure returns (uint256[] memory out) {
        out = new uint256[](count);
        for (uint256 i = 0; i < count; ++i) {
            out[i] = each;
        }
    }

    /// Propose `leaves`' root as the updater and let its window pass.
    function publish(bytes32[] memory leaves) internal {
        vm.prank(aggregator, aggregator);
        distributor.proposeRoot(rootOf(leaves), uint64(leaves.length), keccak256("leaves"));
        vm.warp(block.timestamp + ROOT_WINDOW);
    }

    function test_settleRound_creditsTheRoundTotalToTheRewardsAccountOnce() public {
        uint64 jobId = postNative(2, 4, 8 ether);
        vm.recordLogs();
        playRound(jobId, 0, 0, 4, 1 ether);
        assertEq(market.claimable(address(distributor), address(0)), 4 ether, "the round's total, once");
        for (uint256 i = 0; i < 4; ++i) {
            assertEq(market.claimable(payoutOf(i), address(0)), 0, "no worker credited one by one");
        }
        uint256 credits = 0;
        bytes32 credited = keccak256("RewardCredited(address,address,uint256)");
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i = 0; i < logs.length; ++i) {
            if (logs[i].topics[0] == credited) ++credits;
        }
        assertEq(credits, 1, "one RewardCredited");
        (,, uint256 claimable,,) = market.ledgers(address(0));
        assertEq(claimable, 4 ether, "the ledger counts it claimable");
    }

    function test_setRewardsAccount_onlyOwner_andZeroCreditsWorkersAgain() public {
        vm.prank(aggregator, aggregator);
        vm.expectRevert(abi.encodeWithSelector(Owned.NotOwner.selector, aggregator));
        market.setRewardsAccount(aggregator);
        market.setRewardsAccount(address(0));
        uint64 jobId = postNative(1, 2, 2 ether);
        playRound(jobId, 0, 0, 2, 1 ether);
        assertEq(market.claimable(payoutOf(0), address(0)), 1 ether, "credited to the worker");
        assertEq(market.claimable(address(distributor), address(0)), 0, "not to the distributor");
    }

    function test_claim_paysCumulativeOnceForManyRounds() public {
        uint64 jobId = postNative(2, 4, 8 ether);
        playRound(jobId, 0, 0, 4, 1 ether);
        playRound(jobId, 1, 0, 4, 2 ether);
        bytes32[] memory leaves = leavesOf(distributor, payouts(4), address(0), amounts(4, 3 ether));
        publish(leaves);
        vm.prank(anyone);
        uint256 paid = distributor.claim(claimOf(leaves, payoutOf(2), address(0), 3 ether, 2));
        assertEq(paid, 3 ether, "two rounds in one claim");
        assertEq(payoutOf(2).balance, 3 ether, "paid to the account, whoever submitted it");
        assertEq(distributor.claimed(payoutOf(2), address(0)), 3 ether, "recorded");
        assertEq(distributor.received(address(0)), 12 ether, "pulled the market's credit (both rounds, all workers)");
        assertEq(market.claimable(address(distributor), address(0)), 0, "nothing left there");
        RewardDistributor.Claim memory again = claimOf(leaves, payoutOf(2), address(0), 3 ether, 2);
        vm.expectRevert(
            abi.encodeWithSelector(RewardDistributor.NothingToClaim.selector, payoutOf(2), address(0), 3 ether, 3 ether)
        );
        distributor.claim(again);
    }

    function test_claim_acrossJobs_paysTheDifferenceUnderALaterRoot() public {
        uint64 first = postNative(1, 2, 2 ether);
        playRound(first, 0, 0, 2, 1 ether);
        bytes32[] memory leaves = leavesOf(distributor, payouts(2), address(0), amounts(2, 1 ether));
        publish(leaves);
        distributor.claim(claimOf(leaves, payoutOf(0), address(0), 1 ether, 0));
        uint64 second = postNative(1, 2, 4 ether);
        playRound(second, 0, 0, 2, 2 ether);
        bytes32[] memory later = leavesOf(distributor, payouts(2), address(0), amounts(2, 3 ether));
        publish(later);
        RewardDistributor.Claim[] memory batch = new RewardDistributor.Claim[](2);
        batch[0] = claimOf(later, payoutOf(0), address(0), 3 ether, 0);
        batch[1] = claimOf(later, payoutOf(1), address(0), 3 ether, 1);
        assertEq(distributor.claimBatch(batch), 2, "both paid");
        assertEq(payoutOf(0).balance, 3 ether, "1 + the difference 2");
        assertEq(payoutOf(1).balance, 3 ether, "both jobs at once");
        assertEq(distributor.paid(address(0)), 6 ether, "paid");
        assertEq(address(distributor).balance, 0, "all of it");
    }

    function test_claimBatch_passesOverWhatIsAlreadyPaid() public {
        uint64 jobId = postNative(1, 3, 3 ether);
        playRound(jobId, 0, 0, 3, 1 ether);
        bytes32[] memory leaves = leavesOf(distributor, payouts(3), address(0), amounts(3, 1 ether));
        publish(leaves);
        distributor.claim(claimOf(leaves, payoutOf(1), address(0), 1 ether, 1));
        RewardDistributor.Claim[] memory batch = new RewardDistributor.Claim[](4);
        batch[0] = claimOf(leaves, payoutOf(0), address(0), 1 ether, 0);
        batch[1] = claimOf(leaves, payoutOf(1), address(0), 1 ether, 1); // paid before
        batch[2] = claimOf(leaves, payoutOf(2), address(0), 1 ether, 2);
        batch[3] = batch[2]; // twice in the batch
        assertEq(distributor.claimBatch(batch), 2, "two paid");
        assertEq(payoutOf(2).balance, 1 ether, "once");
        assertEq(distributor.paid(address(0)), 3 ether, "no more than the tree");
    }

    function test_root_goesLiveOnlyAfterItsWindow_andAVetoKeepsTheLiveOne() public {
        uint64 jobId = postNative(1, 2, 4 ether);
        playRound(jobId, 0, 0, 2, 2 ether);
        bytes32[] memory honest = leavesOf(distributor, payouts(2), address(0), amounts(2, 1 ether));
        publish(honest);
        uint256[] memory greedy = amounts(2, 0);
        greedy[0] = 4 ether;
        bytes32[] memory bad = leavesOf(distributor, payouts(2), address(0), greedy);
        vm.prank(aggregator, aggregator);
        distributor.proposeRoot(rootOf(bad), 2, keccak256("bad"));
        assertEq(distributor.liveRoot().root, rootOf(honest), "still the earlier root");
        assertEq(distributor.pendingRoot().root, rootOf(bad), "pending");
        RewardDistributor.Claim memory grab = claimOf(bad, payoutOf(0), address(0), 4 ether, 0);
        vm.expectRevert(
            abi.encodeWithSelector(RewardDistributor.InvalidClaimProof.selector, payoutOf(0), address(0), 4 ether)
        );
        distributor.claim(grab);
        vm.prank(anyone);
        vm.expectRevert(abi.encodeWithSelector(RewardDistributor.NotDisputer.selector, anyone));
        distributor.vetoRoot(keccak256("no"));
        vm.prank(challenger);
        distributor.vetoRoot(keccak256("pays worker 0 everything"));
        assertEq(distributor.pendingRoot().epoch, 0, "no pending root");
        vm.warp(block.timestamp + ROOT_WINDOW);
        vm.expectRevert(
            abi.encodeWithSelector(RewardDistributor.InvalidClaimProof.selector, payoutOf(0), address(0), 4 ether)
        );
        distributor.claim(grab);
        distributor.claim(claimOf(honest, payoutOf(0), address(0), 1 ether, 0));
        assertEq(payoutOf(0).balance, 1 ether, "the honest root pays");
    }

    function test_vetoRoot_refusedOnceLive_andProposeOnlyByTheUpdater() public {
        vm.prank(anyone);
        vm.expectRevert(abi.encodeWithSelector(RewardDistributor.NotUpdater.selector, anyone));
        distributor.proposeRoot(keccak256("r"), 1, bytes32(0));
        vm.prank(aggregator, aggregator);
        vm.expectRevert(RewardDistributor.EmptyRoot.selector);
        distributor.proposeRoot(keccak256("r"), 0, bytes32(0));
        vm.prank(aggregator, aggregator);
        distributor.proposeRoot(keccak256("r"), 1, bytes32(0));
        uint64 liveAt = uint64(block.timestamp) + ROOT_WINDOW;
        vm.warp(liveAt);
        vm.prank(challenger);
        vm.expectRevert(abi.encodeWithSelector(RewardDistributor.DisputeWindowClosed.selector, liveAt));
        distributor.vetoRoot(bytes32(0));
        assertEq(distributor.liveRoot().epoch, 1, "live at the end of its window");
    }

    function test_proposeRoot_replacesAPendingRootAndRestartsItsWindow() public {
        vm.startPrank(aggregator, aggregator);
        distributor.proposeRoot(keccak256("one"), 1, bytes32(0));
        vm.warp(block.timestamp + ROOT_WINDOW - 1);
        distributor.proposeRoot(keccak256("two"), 1, bytes32(0));
        vm.stopPrank();
        vm.warp(block.timestamp + 1);
        assertEq(distributor.liveRoot().epoch, 0, "the first never went live");
        vm.warp(block.timestamp + ROOT_WINDOW);
        assertEq(distributor.liveRoot().root, keccak256("two"), "the second after its own window");
    }

    function test_attack_claimsThatDoNotMatchTheLeafAreRefused() public {
        uint64 jobId = postNative(1, 4, 4 ether);
        playRound(jobId, 0, 0, 4, 1 ether);
        bytes32[] memory leaves = leavesOf(distributor, payouts(4), address(0), amounts(4, 1 ether));
        publish(leaves);
        RewardDistributor.Claim[5] memory forged = [
            claimOf(leaves, payoutOf(1), address(0), 2 ether, 1), // a raised amount
            claimOf(leaves, payoutOf(9), address(0), 1 ether, 1), // another account
            claimOf(leaves, payoutOf(1), address(0xE20), 1 ether, 1), // another token
            claimOf(leaves, payoutOf(1), address(0), 1 ether, 2), // another index
            claimOf(leaves, payoutOf(1), address(0), 1 ether, 4) // out of the tree
        ];
        for (uint256 i = 0; i < forged.length; ++i) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    RewardDistributor.InvalidClaimProof.selector,
                    forged[i].account,
                    forged[i].token,
                    forged[i].cumulative
                )
            );
            distributor.claim(forged[i]);
        }
        RewardDistributor.Claim memory truncated = claimOf(leaves, payoutOf(1), address(0), 1 ether, 1);
        bytes32[] memory shorter = new bytes32[](1);
        shorter[0] = truncated.proof[0];
        truncated.proof = shorter;
        vm.expectRevert(
            abi.encodeWithSelector(RewardDistributor.InvalidClaimProof.selector, payoutOf(1), address(0), 1 ether)
        );
        distributor.claim(truncated);
        assertEq(distributor.paid(address(0)), 0, "nothing paid");
    }

    function test_attack_aTreeForAnotherDistributorOrChainProvesNothing() public {
        uint64 jobId = postNative(1, 2, 2 ether);
        playRound(jobId, 0, 0, 2, 1 ether);
        RewardDistributor other =
            new RewardDistributor(IRewardSource(address(market)), address(this), aggregator, challenger, ROOT_WINDOW);
        bytes32[] memory foreign = leavesOf(other, payouts(2), address(0), amounts(2, 1 ether));
        vm.prank(aggregator, aggregator);
        other.proposeRoot(rootOf(foreign), 2, bytes32(0));
        bytes32[] memory leaves = leavesOf(distributor, payouts(2), address(0), amounts(2, 1 ether));
        publish(leaves);
        vm.expectRevert(
            abi.encodeWithSelector(RewardDistributor.InvalidClaimProof.selector, payoutOf(0), address(0), 1 ether)
        );
        distributor.claim(claimOf(foreign, payoutOf(0), address(0), 1 ether, 0));
        // The same distributor's leaves on another chain id are other leaves. (Foundry's chain id
        // is 31337; a literal, since via-IR may read `block.chainid` after the cheat code.)
        vm.chainId(31_338);
        vm.expectRevert(
            abi.encodeWithSelector(RewardDistributor.InvalidClaimProof.selector, payoutOf(0), address(0), 1 ether)
        );
        distributor.claim(claimOf(leaves, payoutOf(0), address(0), 1 ether, 0));
        vm.chainId(31_337);
        distributor.claim(claimOf(leaves, payoutOf(0), address(0), 1 ether, 0));
    }

    function test_attack_aRootCannotPayMoreThanTheMarketCredited() public {
        uint64 jobId = postNative(2, 2, 2 ether);
        playRound(jobId, 0, 0, 2, 1 ether);
        uint256[] memory greedy = amounts(2, 1 ether);
        greedy[0] = 3 ether; // 4 ether in the tree, 2 credited
        bytes32[] memory leaves = leavesOf(distributor, payouts(2), address(0), greedy);
        publish(leaves);
        vm.expectRevert(abi.encodeWithSelector(RewardDistributor.Underfunded.selector, address(0), 3 ether, 2 ether));
        distributor.claim(claimOf(leaves, payoutOf(0), address(0), 3 ether, 0));
        assertEq(distributor.claimed(payoutOf(0), address(0)), 0, "nothing recorded");
        assertEq(market.claimable(address(distributor), address(0)), 2 ether, "the pull went back with it");
        distributor.claim(claimOf(leaves, payoutOf(1), address(0), 1 ether, 1));
        assertEq(distributor.paid(address(0)), 1 ether, "what was credited still pays");
    }

    function test_noLiveRoot_andPaymentsOnlyFromTheSource() public {
        bytes32[] memory proof = new bytes32[](0);
        vm.expectRevert(RewardDistributor.NoLiveRoot.selector);
        distributor.claim(RewardDistributor.Claim(payoutOf(0), address(0), 1, 0, proof));
        vm.deal(anyone, 1 ether);
        vm.prank(anyone);
        (bool ok,) = address(distributor).call{value: 1 ether}("");
        assertFalse(ok, "refused");
        vm.expectRevert(
            abi.encodeWithSelector(
                RewardDistributor.DisputeWindowTooLong.selector, uint64(31 days), distributor.MAX_DISPUTE_WINDOW()
            )
        );
        distributor.setDisputeWindow(31 days);
    }

    function test_tokenRewards_arePulledAndPaid() public {
        MockERC20 token = new MockERC20();
        token.mint(poster, 10 ether);
        JobMarket.JobSpec memory s = spec(1, 2, 2 ether);
        s.token = address(token);
        vm.startPrank(poster);
        token.approve(address(market), 2 ether);
        uint64 jobId = market.postJob(s);
        vm.stopPrank();
        playRound(jobId, 0, 0, 2, 1 ether);
        bytes32[] memory leaves = leavesOf(distributor, payouts(2), address(token), amounts(2, 1 ether));
        publish(leaves);
        RewardDistributor.Claim[] memory batch = new RewardDistributor.Claim[](2);
        batch[0] = claimOf(leaves, payoutOf(0), address(token), 1 ether, 0);
        batch[1] = claimOf(leaves, payoutOf(1), address(token), 1 ether, 1);
        distributor.claimBatch(batch);
        assertEq(token.balanceOf(payoutOf(0)), 1 ether, "token paid");
        assertEq(token.balanceOf(address(distributor)), 0, "none left");
        assertEq(distributor.received(address(token)), 2 ether, "received");
    }

    function test_aRefusedPaymentRevertsTheClaim() public {
        uint64 jobId = postNative(1, 1, 1 ether);
        playRound(jobId, 0, 0, 1, 1 ether);
        address[] memory accounts = new address[](1);
        accounts[0] = address(market); // a contract that refuses plain payments
        bytes32[] memory leaves = leavesOf(distributor, accounts, address(0), amounts(1, 1 ether));
        publish(leaves);
        vm.expectRevert(
            abi.encodeWithSelector(TokenTransfer.TransferFailed.selector, address(0), address(market), 1 ether)
        );
        distributor.claim(claimOf(leaves, address(market), address(0), 1 ether, 0));
        assertEq(distributor.claimed(address(market), address(0)), 0, "not recorded");
    }

    function testFuzz_everyAccountIsPaidItsCumulativeExactly(uint8 size, uint256 seed) public {
        uint256 n = bound(size, 1, 40);
        uint256[] memory cumulative = new uint256[](n);
        address[] memory accounts = new address[](n);
        uint256 total = 0;
        for (uint256 i = 0; i < n; ++i) {
            accounts[i] = address(uint160(0x7000 + i));
            cumulative[i] = bound(uint256(keccak256(abi.encode(seed, i))), 1, 1 ether);
            total += cumulative[i];
        }
        uint64 jobId = postNative(1, 1, total);
        playRound(jobId, 0, 0, 1, total);
        bytes32[] memory leaves = leavesOf(distributor, accounts, address(0), cumulative);
        publish(leaves);
        RewardDistributor.Claim[] memory batch = new RewardDistributor.Claim[](n);
        for (uint256 i = 0; i < n; ++i) {
            batch[i] = claimOf(leaves, accounts[i], address(0), cumulative[i], i);
        }
        assertEq(distributor.claimBatch(batch), n, "every claim paid");
        for (uint256 i = 0; i < n; ++i) {
            assertEq(accounts[i].balance, cumulative[i], "its cumulative");
        }
        assertEq(distributor.claimBatch(batch), 0, "the same batch again pays nothing");
        assertEq(address(distributor).balance, 0, "all paid");
    }
}
